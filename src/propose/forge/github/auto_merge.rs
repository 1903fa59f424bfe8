//! GitHub's auto-merge, for approvals by policy: enabling it (GraphQL's
//! `enablePullRequestAutoMerge`; REST has no such call) leaves the merge to GitHub, which
//! merges once the required checks pass and branch protection allows. A repository without
//! required checks answers that the pull request is already mergeable ("clean status"):
//! then it is merged now, through the same REST merge as any approval, pinned to the head.

use serde_json::{Value, json};

use super::client::Kind;
use super::{GhError, GithubForge};
use crate::domain::Proposal;
use crate::propose::auto_approve::POLICY_ACTOR;
use crate::propose::forge::{AutoMerge, Forge, ForgeError};

const DISABLE: &str =
    "mutation($id: ID!) { disablePullRequestAutoMerge(input: {pullRequestId: $id}) { pullRequest { number } } }";
const ENABLE: &str = "mutation($id: ID!, $head: GitObjectID) { enablePullRequestAutoMerge(input: {pullRequestId: $id, mergeMethod: MERGE, expectedHeadOid: $head}) { pullRequest { number } } }";

/// Where GraphQL is: `api.github.com/graphql`, or `<host>/api/graphql` on GitHub Enterprise
/// (whose REST root is `<host>/api/v3`).
pub(super) fn graphql_path(api_url: &str) -> String {
    match api_url.trim_end_matches('/').strip_suffix("/api/v3") {
        Some(host) => format!("{host}/api/graphql"),
        None => "/graphql".into(),
    }
}

impl GithubForge {
    /// The pull request as GitHub has it now (its GraphQL id, its auto-merge).
    async fn pull_json(&self, proposal: &Proposal) -> Result<(u64, Value), ForgeError> {
        let number = proposal
            .number
            .ok_or_else(|| ForgeError::Other("the proposal has no pull request".into()))?;
        let pr: Value = self
            .client
            .get(&self.path(&format!("/pulls/{number}")))
            .await
            .and_then(|r| r.parse())
            .map_err(|e: GhError| ForgeError::Other(e.to_string()))?;
        Ok((number, pr))
    }

    /// Sends a GraphQL mutation about pull request `pr`; GitHub's error messages, if any.
    async fn mutate(&self, query: &str, pr: &Value, head: Option<&str>) -> Result<Vec<String>, ForgeError> {
        let Some(id) = pr["node_id"].as_str() else {
            return Err(ForgeError::Other(format!(
                "pull request #{} has no node id",
                pr["number"]
            )));
        };
        let mut variables = json!({"id": id});
        if let Some(head) = head {
            variables["head"] = json!(head);
        }
        let reply: Value = self
            .client
            .call(
                reqwest::Method::POST,
                &self.graphql,
                Some(&json!({"query": query, "variables": variables})),
                Kind::Idempotent,
            )
            .await
            .and_then(|r| r.parse())
            .map_err(|e: GhError| ForgeError::Other(e.to_string()))?;
        Ok(reply["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["message"].as_str().map(str::to_string))
            .collect())
    }

    pub(super) async fn disable_auto_merge(&self, proposal: &Proposal) -> Result<(), ForgeError> {
        let (number, pr) = self.pull_json(proposal).await?;
        if pr["auto_merge"].is_null() {
            return Ok(());
        }
        let errors = self.mutate(DISABLE, &pr, None).await?;
        if !errors.is_empty() {
            return Err(ForgeError::Other(format!(
                "GitHub would not disable auto-merge on pull request #{number}: {}",
                errors.join("; ")
            )));
        }
        Ok(())
    }

    pub(super) async fn enable_auto_merge(&self, proposal: &Proposal) -> Result<AutoMerge, ForgeError> {
        let (number, pr) = self.pull_json(proposal).await?;
        let errors = self.mutate(ENABLE, &pr, Some(&proposal.head)).await?;
        if errors.is_empty() {
            return Ok(AutoMerge::Enabled);
        }
        if errors.iter().any(|m| m.contains("clean status")) {
            self.approve(proposal, POLICY_ACTOR).await?;
            return Ok(AutoMerge::Merged);
        }
        Err(ForgeError::Other(format!(
            "GitHub would not enable auto-merge on pull request #{number}: {} (is auto-merge allowed in the repository's settings?)",
            errors.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn graphql_is_beside_the_rest_root() {
        assert_eq!(super::graphql_path("https://api.github.com"), "/graphql");
        assert_eq!(
            super::graphql_path("https://ghe.example/api/v3/"),
            "https://ghe.example/api/graphql"
        );
    }
}
