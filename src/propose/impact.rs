//! What an edit of the rules or templates would do to the recorded machines: every machine
//! with facts in a state an edit reaches, rendered under both template sets from the same
//! facts, address and workflow (`render::impact::compare`). `registrar check --impact`
//! compares a git revision with the working copy; the console compares the templates this
//! process runs with and the ones on disk now (what a restart would render).

use crate::domain::State;
use crate::ipam::Pools;
use crate::render::Renderer;
use crate::render::impact::{Change, compare, in_scope};
use crate::store::{MachineQuery, Store, StoreError};

#[derive(Debug, serde::Serialize)]
pub struct Impact {
    /// Machines with facts in a state a template edit reaches.
    pub compared: usize,
    pub changed: Vec<Change>,
}

/// Every machine in scope, a page of the store at a time, under `before` and `after`.
pub fn compare_store(
    before: &Renderer,
    after: &Renderer,
    store: &dyn Store,
    pools: &Pools,
) -> Result<Impact, StoreError> {
    const PAGE: u32 = 1000;
    let mut compared = 0;
    let mut changed = Vec::new();
    for state in State::ALL.into_iter().filter(|s| in_scope(*s)) {
        let mut offset = 0;
        loop {
            let page = store.machines(&MachineQuery {
                state: Some(state),
                limit: PAGE,
                offset,
                ..MachineQuery::default()
            })?;
            for machine in page.iter().filter(|m| m.facts.is_some()) {
                compared += 1;
                let address = store.addresses(machine.mac)?.into_iter().find_map(|(pool, ip)| {
                    let pool = pools.production.iter().find(|p| p.name == pool)?;
                    Some(pool.address(ip.parse().ok()?))
                });
                changed.extend(compare(before, after, machine, address.as_ref()));
            }
            if page.len() < PAGE as usize {
                break;
            }
            offset += PAGE;
        }
    }
    changed.sort_by(|a, b| a.mac.cmp(&b.mac));
    Ok(Impact { compared, changed })
}
