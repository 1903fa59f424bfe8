//! The hand-off's share of a re-inventory: for each machine in `inventorying`, make sure its
//! re-inventory Workflow exists (with a report token whose hash is stored first), and bring
//! the machine back to `provisioned` when the Workflow fails, ends without a report, or the
//! report does not come in time. Its report itself brings it back (the store does that), and
//! the Workflow, finished, is removed here.

use std::sync::Arc;

use chrono::Utc;

use super::handoff::Handoff;
use crate::cluster::inventory::{self, Found, Inventory, InventorySettings};
use crate::cluster::{Provisioning, provisioning_of};
use crate::domain::{Machine, State};
use crate::store::StoreError;

/// Re-inventory Workflows need the URL a machine reports to (the discovery one).
pub(super) fn inventory(
    d: &crate::config::DiscoveryConfig,
    client: &kube::Client,
    namespace: &str,
) -> Option<Arc<Inventory>> {
    (!d.report_url.is_empty()).then(|| {
        Arc::new(Inventory::new(
            client.clone(),
            InventorySettings {
                namespace: namespace.to_string(),
                template: d.reinventory_template.clone(),
                report_url: d.report_url.clone(),
                ttl: chrono::Duration::seconds(d.ttl_seconds as i64),
            },
        ))
    })
}

impl Handoff {
    /// One pass over re-inventories: the machines that wait for one, then the Workflows
    /// left behind.
    pub(super) async fn follow_inventories(&self) -> anyhow::Result<()> {
        let inventorying = self.machines(State::Inventorying).await?;
        let Some(inventory) = &self.inventory else {
            for m in &inventorying {
                self.back_to_provisioned(
                    m,
                    "re-inventory needs cluster.discovery.report_url: no Workflow was made",
                )
                .await?;
            }
            return Ok(());
        };
        let found = inventory.list().await?;
        for m in &inventorying {
            let step = self.follow_inventory(m, found.iter().find(|f| f.mac == m.mac)).await;
            self.note_failure(m, step).await;
        }
        // A Workflow whose machine no longer waits for it: finished (the report came and the
        // machine rebooted), or past its time.
        let now = Utc::now().timestamp();
        for f in found.iter().filter(|f| !inventorying.iter().any(|m| m.mac == f.mac)) {
            let outcome = provisioning_of(&f.object);
            if outcome == Provisioning::Running && f.expires > now {
                continue;
            }
            inventory.remove(&f.mac).await?;
            if let Provisioning::Failed(why) = outcome {
                let (store, mac) = (self.proposer.store().clone(), f.mac);
                let why = format!("re-inventory Workflow failed after the report: {why}");
                tokio::task::spawn_blocking(move || store.set_error(mac, Some(&why))).await??;
            }
            tracing::info!(mac = %f.mac, "re-inventory Workflow removed");
        }
        Ok(())
    }

    async fn follow_inventory(&self, m: &Machine, found: Option<&Found>) -> anyhow::Result<()> {
        let Some(inventory) = &self.inventory else {
            return Ok(());
        };
        let (store, mac) = (self.proposer.store().clone(), m.mac);
        let asked = tokio::task::spawn_blocking(move || store.transitions(mac))
            .await??
            .iter()
            .rev()
            .find(|t| t.to == State::Inventorying)
            .map(|t| t.at)
            .unwrap_or_else(Utc::now);
        let ttl = inventory.settings().ttl;
        match found {
            // One left from an earlier re-inventory: it goes, and this one's is made next pass.
            Some(f) if f.asked != asked.timestamp() => inventory.remove(&m.mac).await?,
            Some(f) => match provisioning_of(&f.object) {
                Provisioning::Failed(why) => {
                    inventory.remove(&m.mac).await?;
                    self.back_to_provisioned(m, &format!("re-inventory failed: {why}"))
                        .await?;
                }
                Provisioning::Succeeded => {
                    inventory.remove(&m.mac).await?;
                    self.back_to_provisioned(m, "re-inventory Workflow ended without a report")
                        .await?;
                }
                Provisioning::Running if f.expires < Utc::now().timestamp() => {
                    inventory.remove(&m.mac).await?;
                    let why = format!("re-inventory expired: no report within {} s", ttl.num_seconds());
                    self.back_to_provisioned(m, &why).await?;
                }
                Provisioning::Running => {}
            },
            None => {
                let target = match self.proposer.inventory_target(m).await {
                    Ok(target) => target,
                    // Its rule no longer opts it in (say): nothing boots, and it says why.
                    Err(e) => return self.back_to_provisioned(m, &format!("re-inventory refused: {e}")).await,
                };
                let expires = asked + ttl;
                if expires < Utc::now() {
                    let why = format!("re-inventory expired: no report within {} s", ttl.num_seconds());
                    return self.back_to_provisioned(m, &why).await;
                }
                // The token's hash is stored before anything that carries the token exists.
                let token = hex::encode(rand::random::<[u8; 24]>());
                let (store, hash) = (self.proposer.store().clone(), crate::server::digest_hex(&token));
                tokio::task::spawn_blocking(move || store.add_report_token(mac, &hash, expires)).await??;
                let workflow = inventory::workflow(inventory.settings(), &mac, &target, &token, asked, expires);
                inventory.create(workflow).await?;
                tracing::info!(%mac, hardware = %target.hardware, via_bmc = target.via_bmc, "booting into re-inventory");
            }
        }
        Ok(())
    }

    /// Ends a re-inventory that brought no report; the reason stays on the machine.
    async fn back_to_provisioned(&self, m: &Machine, cause: &str) -> anyhow::Result<()> {
        let (store, mac, why) = (self.proposer.store().clone(), m.mac, cause.to_string());
        tokio::task::spawn_blocking(move || {
            if store.machine(mac)?.is_some_and(|m| m.state == State::Inventorying) {
                store.transition(mac, State::Provisioned, &why, "registrar", Utc::now())?;
                store.set_error(mac, Some(&why))?;
            }
            Ok::<_, StoreError>(())
        })
        .await??;
        tracing::warn!(%mac, "{cause}");
        Ok(())
    }
}
