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
    pub(super) async fn enable_auto_merge(&self, proposal: &Proposal) -> Result<AutoMerge, ForgeError> {
        let number = proposal
            .number
            .ok_or_else(|| ForgeError::Other("the proposal has no pull request".into()))?;
        let pr: Value = self
            .client
            .get(&self.path(&format!("/pulls/{number}")))
            .await
            .and_then(|r| r.parse())
            .map_err(|e: GhError| ForgeError::Other(e.to_string()))?;
        let Some(id) = pr["node_id"].as_str() else {
            return Err(ForgeError::Other(format!("pull request #{number} has no node id")));
        };
        let body = json!({"query": ENABLE, "variables": {"id": id, "head": proposal.head}});
        let reply: Value = self
            .client
            .call(reqwest::Method::POST, &self.graphql, Some(&body), Kind::Idempotent)
            .await
            .and_then(|r| r.parse())
            .map_err(|e: GhError| ForgeError::Other(e.to_string()))?;
        let errors: Vec<&str> = reply["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["message"].as_str())
            .collect();
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
