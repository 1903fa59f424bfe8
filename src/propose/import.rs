//! Bulk import, after parsing: decide each row's fate against what Registrar, the GitOps
//! repository and the cluster already know, then store the valid rows in one transaction.

use chrono::Utc;
use serde::Serialize;

use super::{ProposeError, Proposer, blocking};
use crate::domain::{Expected, ImportMode, Mac, State};
use crate::sources::import::ParsedRow;
use crate::store::{Batch, BatchRow, StoreError};

/// One row of a preview: what the file said and every reason it cannot be imported.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewRow {
    pub line: u32,
    pub mac: String,
    pub hostname: Option<String>,
    pub ip: Option<String>,
    pub errors: Vec<String>,
    #[serde(skip)]
    pub parsed: Option<(Mac, Expected)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportOutcome {
    pub mode: ImportMode,
    pub rows: Vec<PreviewRow>,
    pub valid: usize,
    pub invalid: usize,
    /// Set when the rows were stored.
    pub batch: Option<Batch>,
}

impl Proposer {
    /// Checks parsed rows against the world: known, proposed, expected already, or naming a
    /// workflow that has no template. Stores nothing.
    pub async fn preview_import(&self, rows: Vec<ParsedRow>) -> Result<Vec<PreviewRow>, ProposeError> {
        let store = self.store.clone();
        let macs: Vec<Mac> = rows.iter().filter_map(|r| r.mac).collect();
        let machines = blocking(move || {
            macs.into_iter()
                .map(|m| store.machine(m))
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await?;
        let mut machines = machines
            .into_iter()
            .flatten()
            .map(|m| (m.mac, m))
            .collect::<std::collections::HashMap<_, _>>();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut errors = row.errors.clone();
            if let Some(w) = &row.values.workflow
                && !self.renderer.has_workflow(w)
            {
                errors.push(format!(
                    "no workflow template named {w:?} (known: {})",
                    self.renderer.workflows().collect::<Vec<_>>().join(", ")
                ));
            }
            if let Some(mac) = row.mac {
                if self.known.contains(&mac) {
                    errors.push(format!(
                        "{mac} is already known: a Hardware in the cluster or a manifest on the base branch holds it"
                    ));
                } else if let Some(m) = machines.remove(&mac) {
                    if let Some(e) = &m.expected {
                        errors.push(format!("{mac} is already expected ({})", e.provenance()));
                    } else if m.state == State::Rejected {
                        errors.push(format!("{mac} was rejected; un-suppress it before importing it"));
                    } else if !matches!(
                        m.state,
                        State::Detected | State::Waiting | State::Discovering | State::Reported
                    ) {
                        errors.push(format!("{mac} is already {}", m.state));
                    }
                }
            }
            let parsed = (errors.is_empty())
                .then_some(())
                .and(row.mac)
                .map(|m| (m, row.values.clone()));
            out.push(PreviewRow {
                line: row.line,
                mac: row.raw_mac,
                hostname: row.values.hostname,
                ip: row.values.ip,
                errors,
                parsed,
            });
        }
        Ok(out)
    }

    /// Previews, and unless `dry_run`, stores every valid row in one transaction. With
    /// invalid rows, nothing is stored unless `skip_invalid` says to store the valid ones.
    pub async fn import(
        &self,
        rows: Vec<ParsedRow>,
        mode: ImportMode,
        name: &str,
        actor: &str,
        dry_run: bool,
        skip_invalid: bool,
    ) -> Result<ImportOutcome, ProposeError> {
        let preview = self.preview_import(rows).await?;
        let valid = preview.iter().filter(|r| r.parsed.is_some()).count();
        let invalid = preview.len() - valid;
        let mut outcome = ImportOutcome {
            mode,
            rows: preview,
            valid,
            invalid,
            batch: None,
        };
        if dry_run || valid == 0 || (invalid > 0 && !skip_invalid) {
            return Ok(outcome);
        }
        let imported: Vec<(Mac, Expected)> = outcome.rows.iter().filter_map(|r| r.parsed.clone()).collect();
        let skipped: Vec<BatchRow> = outcome
            .rows
            .iter()
            .filter(|r| r.parsed.is_none())
            .map(|r| BatchRow {
                line: r.line,
                mac: Mac::parse(&r.mac).ok(),
                error: Some(r.errors.join("; ")),
                state: None,
            })
            .collect();
        let (store, name, actor) = (self.store.clone(), name.to_string(), actor.to_string());
        let batch = blocking(move || store.import(&name, mode, &actor, &imported, &skipped, Utc::now())).await?;
        self.wake();
        outcome.batch = Some(batch);
        Ok(outcome)
    }
}
