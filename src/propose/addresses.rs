//! Machines' addresses from the configured pools: a discovery address for the temporary
//! Hardware, a production address for the proposed one. The store chooses and records
//! each in one transaction; what the base branch and the cluster already hold is never
//! handed out.

use std::sync::Arc;

use chrono::Utc;

use super::{ProposeError, Proposer, blocking};
use crate::domain::{Mac, Machine};
use crate::ipam::{Address, Placement, Pool, Pools};

/// The pools in use, or why there are none yet.
#[derive(Debug, Default)]
pub struct LoadedPools {
    pools: Arc<Pools>,
    /// Set while the pools are to come from a file not read yet: allocation waits for it
    /// rather than proceeding without addresses.
    awaited: Option<String>,
}

impl Proposer {
    pub fn with_pools(self, pools: Pools) -> Self {
        self.replace_pools(pools);
        self
    }

    /// With a `source` (the GitOps repository's file), the pools come from there and are
    /// not read yet.
    pub fn awaiting_pools(self, source: Option<String>) -> Self {
        self.pools.write().unwrap_or_else(|p| p.into_inner()).awaited = source;
        self
    }

    /// Puts `pools` in use (at start, or when their file on the base branch changed).
    pub fn replace_pools(&self, pools: Pools) {
        for pool in pools.discovery.iter().chain(&pools.production) {
            let label = crate::metrics::PoolLabel {
                pool: pool.name.clone(),
            };
            self.metrics.pool_size.get_or_create(&label).set(pool.size() as i64);
            let _ = self.metrics.pool_exhausted.get_or_create(&label);
        }
        *self.pools.write().unwrap_or_else(|p| p.into_inner()) = LoadedPools {
            pools: Arc::new(pools),
            awaited: None,
        };
    }

    pub fn pools(&self) -> Arc<Pools> {
        self.pools.read().unwrap_or_else(|p| p.into_inner()).pools.clone()
    }

    /// Where the pools are to be read from, while they are not read yet.
    pub fn pools_awaited(&self) -> Option<String> {
        self.pools.read().unwrap_or_else(|p| p.into_inner()).awaited.clone()
    }

    /// The pools to allocate from; an error while they are still to be read.
    fn usable_pools(&self) -> Result<Arc<Pools>, ProposeError> {
        let loaded = self.pools.read().unwrap_or_else(|p| p.into_inner());
        match &loaded.awaited {
            Some(source) => Err(ProposeError::Conflict(format!(
                "the address pools are not read yet from {source}"
            ))),
            None => Ok(loaded.pools.clone()),
        }
    }

    /// The address `mac`'s temporary Hardware carries; None without a discovery pool.
    pub async fn discovery_address(&self, mac: Mac) -> Result<Option<Address>, ProposeError> {
        match self.usable_pools()?.discovery.clone() {
            Some(pool) => self.allocate(mac, pool, None).await.map(Some),
            None => Ok(None),
        }
    }

    /// The address `machine`'s permanent Hardware carries: from the first pool that fits
    /// it (its DHCP relay, its imported location), or the address its import row gave,
    /// checked the same way. None without production pools.
    pub async fn production_address(&self, machine: &Machine) -> Result<Option<Address>, ProposeError> {
        let Some(pool) = self.production_pool(machine)? else {
            return Ok(None);
        };
        let wanted =
            match machine.expected.as_ref().and_then(|e| e.ip.as_deref()) {
                None => None,
                Some(ip) => Some(ip.parse().map_err(|_| {
                    ProposeError::Conflict(format!("the imported address {ip:?} is not an IPv4 address"))
                })?),
            };
        self.allocate(machine.mac, pool, wanted).await.map(Some)
    }

    /// The pool `machine`'s permanent address comes from: the first whose `match` fits
    /// (relay, option 82, LLDP switch, import location or rack, a condition over facts).
    pub fn production_pool(&self, machine: &Machine) -> Result<Option<Pool>, ProposeError> {
        let facts = machine.facts.clone().unwrap_or_default();
        let input = crate::render::RenderInput::for_machine(machine, &facts);
        // A condition that cannot be evaluated stops the choice: a machine meant for a
        // special pool must not silently get the default one.
        let failed = std::cell::RefCell::new(None);
        let holds = |when: &str| match self.renderer.holds(when, &input) {
            Ok(yes) => yes,
            Err(e) => {
                failed.borrow_mut().get_or_insert(e);
                false
            }
        };
        let pool = self
            .usable_pools()?
            .for_machine(&Placement::of(machine), &holds)
            .cloned();
        match failed.into_inner() {
            Some(e) => Err(ProposeError::Conflict(format!("choosing an address pool: {e}"))),
            None => Ok(pool),
        }
    }

    /// The production address `mac` holds now, if any (a read: nothing is allocated).
    pub async fn held_address(&self, machine: &Machine) -> Result<Option<Address>, ProposeError> {
        let (store, mac) = (self.store.clone(), machine.mac);
        let held = blocking(move || store.addresses(mac)).await?;
        let pools = self.pools();
        Ok(held.into_iter().find_map(|(pool, ip)| {
            let pool = pools.production.iter().find(|p| p.name == pool)?;
            Some(pool.address(ip.parse().ok()?))
        }))
    }

    async fn allocate(
        &self,
        mac: Mac,
        pool: Pool,
        wanted: Option<std::net::Ipv4Addr>,
    ) -> Result<Address, ProposeError> {
        let (store, known, p) = (self.store.clone(), self.known.clone(), pool.clone());
        let (ip, used) = blocking(move || {
            let ip = store.allocate(mac, &p, wanted, &|ip| known.address_taken(ip), Utc::now())?;
            Ok::<_, crate::store::StoreError>((ip, store.addresses_used(&p.name, Utc::now())?))
        })
        .await?;
        let label = crate::metrics::PoolLabel {
            pool: pool.name.clone(),
        };
        self.metrics.pool_used.get_or_create(&label).set(used as i64);
        if ip.is_none() && wanted.is_none() {
            self.metrics.pool_exhausted.get_or_create(&label).inc();
        }
        match (ip, wanted) {
            (Some(ip), _) => Ok(pool.address(ip)),
            (None, Some(w)) => Err(ProposeError::Conflict(format!(
                "the imported address {w} cannot be given: it is outside pool {:?}'s ranges, excluded, held by another machine or already in a Hardware",
                pool.name
            ))),
            (None, None) => Err(ProposeError::Conflict(format!(
                "address pool {:?} is exhausted: every address is held, quarantined or already in a Hardware",
                pool.name
            ))),
        }
    }

    /// Returns `mac`'s addresses to their pools, unused for `ipam.quarantine_seconds`.
    pub async fn release_addresses(&self, mac: Mac) -> Result<(), ProposeError> {
        self.release(mac, None).await
    }

    /// Returns `mac`'s discovery address once its temporary Hardware is gone.
    pub async fn release_discovery_address(&self, mac: Mac) -> Result<(), ProposeError> {
        match self.pools().discovery.as_ref().map(|p| p.name.clone()) {
            Some(pool) => self.release(mac, Some(pool)).await,
            None => Ok(()),
        }
    }

    async fn release(&self, mac: Mac, pool: Option<String>) -> Result<(), ProposeError> {
        let until = Utc::now() + chrono::Duration::seconds(self.pools().quarantine_seconds as i64);
        let store = self.store.clone();
        blocking(move || store.release_addresses(mac, pool.as_deref(), until)).await?;
        Ok(())
    }
}
