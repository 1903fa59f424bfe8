//! Names no other machine has: a counting pattern's number is given once per machine and
//! skips names already taken; a name the pattern gives that another machine's Hardware
//! has (in Registrar, on the base branch, in the cluster) is refused, and said why.

use super::{ProposeError, Proposer, blocking};
use crate::domain::Mac;
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
