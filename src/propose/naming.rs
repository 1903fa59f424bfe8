//! A machine's identity against everyone else's. Names no other machine has: a counting
//! pattern's number is given once per machine and skips names already taken; a name the
//! pattern gives that another machine's Hardware has (in Registrar, anywhere on the base
//! branch, in the cluster) is refused, and said why. A serial or system UUID another
//! machine reported is told to the reviewer; a reported BMC address outside the BMC
//! networks, or another machine's BMC, gets no BMC object (Rufio would send that BMC's
//! credentials to it).

use super::{ProposeError, Proposer, blocking};
use crate::domain::{Facts, Mac, Machine};
use crate::render::RenderInput;

/// How many taken names a new number skips before giving up (a pattern that ignores `seq`
/// would otherwise loop for ever).
const MAX_SKIPPED: u64 = 1000;

impl Proposer {
    /// The machine's number where the name pattern counts (`seq`): the one it was given,
    /// else the next whose name nobody has. The store's unique column settles a race with
    /// another machine taking the same number.
    pub(super) async fn name_number(&self, input: &RenderInput<'_>) -> Result<Option<u64>, ProposeError> {
        if !self.renderer.names_by_sequence() {
            return Ok(None);
        }
        let (store, mac) = (self.store.clone(), *input.mac);
        if let Some(n) = blocking(move || store.name_number(mac)).await? {
            return Ok(Some(n));
        }
        let store = self.store.clone();
        let mut candidate = blocking(move || store.next_name_number()).await?;
        for _ in 0..MAX_SKIPPED {
            let name = self.renderer.name_from_pattern(&RenderInput {
                sequence: Some(candidate),
                ..*input
            });
            let taken = match &name {
                Some(name) => self.name_clash(name, input.mac).await?.is_some(),
                None => false,
            };
            if !taken {
                let store = self.store.clone();
                if let Some(n) = blocking(move || store.claim_name_number(mac, candidate)).await? {
                    return Ok(Some(n));
                }
            }
            candidate += 1;
        }
        Err(ProposeError::Conflict(format!(
            "the name pattern gave {MAX_SKIPPED} names in a row that other machines have; does it use `seq`?"
        )))
    }

    /// Why `name` cannot be `mac`'s: another machine has it. None when it is free.
    pub(super) async fn name_clash(&self, name: &str, mac: &Mac) -> Result<Option<String>, ProposeError> {
        let (store, owned) = (self.store.clone(), name.to_string());
        if let Some(other) = blocking(move || store.name_owner(&owned)).await?
            && other != *mac
        {
            return Ok(Some(format!(
                "the name {name} is machine {other}'s in Registrar; this one is named after its MAC"
            )));
        }
        Ok(self.known.name_holder(name, mac).map(|source| {
            let place = match source {
                "gitops" => format!("a Hardware on the base branch {}", self.git.base()),
                "cluster" => "a Hardware in the cluster".to_string(),
                other => format!("a Hardware in {other}"),
            };
            format!("the name {name} is {place}, for another machine; this one is named after its MAC")
        }))
    }
}

impl Proposer {
    /// The facts to render and what the reviewer must be told about who the machine claims
    /// to be.
    pub(super) async fn check_identity(
        &self,
        machine: &Machine,
        facts: &Facts,
    ) -> Result<(Facts, Vec<String>), ProposeError> {
        let mut facts = facts.clone();
        let mut warnings = Vec::new();
        let (store, mac) = (self.store.clone(), machine.mac);
        let claimed = facts.clone();
        let sharing = blocking(move || store.sharing_identity(mac, &claimed)).await?;
        for (other, what) in sharing {
            warnings.push(format!(
                "Identity: machine {other} reported the same {what}. Two machines claim one identity: make sure this is the machine you mean before merging."
            ));
        }
        if let Some(bmc) = facts.bmc.as_ref().map(|b| b.address.clone()) {
            let inside = bmc
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| self.bmc_networks.iter().any(|n| n.contains(&ip)));
            let refusal = if !inside {
                Some(format!(
                    "BMC: the reported BMC address {bmc} is outside discovery.bmc_networks, so no BMC object is proposed (Rufio would send the BMC's credentials there)."
                ))
            } else {
                self.known.bmc_of_another(&bmc, &mac).map(|(other, source)| {
                    format!(
                        "BMC: {bmc} is the BMC of another machine (Machine {other}, {}), so no BMC object is proposed.",
                        declared_in(source)
                    )
                })
            };
            if let Some(refusal) = refusal {
                facts.bmc = None;
                warnings.push(refusal);
            }
        }
        if let Some(bmc) = machine.expected.as_ref().and_then(|e| e.bmc_address.as_deref())
            && let Some((other, source)) = self.known.bmc_of_another(bmc, &mac)
        {
            warnings.push(format!(
                "BMC: the imported BMC address {bmc} is the BMC of another machine (Machine {other}, {}).",
                declared_in(source)
            ));
        }
        Ok((facts, warnings))
    }
}

/// Where a known object is declared, in words for a reviewer.
fn declared_in(source: &str) -> &'static str {
    match source {
        "cluster" => "in the cluster",
        _ => "on the base branch",
    }
}

impl Proposer {
    /// With `cluster.check_bmc_secrets`: why a new machine named `name` gets no BMC object,
    /// if the credentials Secret it would name (`<name>-bmc`) exists already — left by
    /// another machine, it would send that machine's BMC credentials to this one's BMC.
    /// An import row that names its Secret chose it on purpose.
    pub(super) async fn foreign_bmc_secret(
        &self,
        machine: &Machine,
        facts: &Facts,
        name: &str,
    ) -> Result<Option<String>, ProposeError> {
        let Some(cluster) = self.cluster.get() else {
            return Ok(None);
        };
        if facts.bmc.is_none()
            || !self.check_bmc_secrets.load(std::sync::atomic::Ordering::Relaxed)
            || machine.expected.as_ref().is_some_and(|e| e.bmc_secret.is_some())
        {
            return Ok(None);
        }
        let secret = format!("{name}-bmc");
        match cluster.secret_exists(&secret).await {
            Ok(false) => Ok(None),
            Ok(true) => Ok(Some(format!(
                "BMC: a Secret {secret} is already in the cluster, before this machine was registered: it may hold another machine's BMC credentials, so no BMC object is proposed. Delete or rename that Secret if it is stale, then re-render."
            ))),
            Err(e) => Err(ProposeError::Conflict(format!(
                "could not check whether the BMC credentials Secret {secret} exists (cluster.check_bmc_secrets; does the role grant get on secrets?): {e}"
            ))),
        }
    }
}
