//! A pull request as Registrar reads it: from a listing, a GET or a webhook delivery,
//! through octocrab's model.

/// What Registrar needs to know of a pull request, from a listing, a GET or a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    pub open: bool,
    pub merged: bool,
    pub head_ref: String,
    pub head_sha: String,
    pub head_repo: String,
    pub base_ref: String,
    pub labels: Vec<String>,
    pub url: Option<String>,
    pub merged_by: Option<String>,
    /// The description as it is now (a grouped pull request's checkboxes).
    pub body: String,
}

impl From<octocrab::models::pulls::PullRequest> for PullRequest {
    fn from(pr: octocrab::models::pulls::PullRequest) -> Self {
        PullRequest {
            number: pr.number,
            open: pr.state == Some(octocrab::models::IssueState::Open),
            merged: pr.merged == Some(true) || pr.merged_at.is_some(),
            head_sha: pr.head.sha,
            body: pr.body.unwrap_or_default(),
            // GitHub sends no head repository once a fork is deleted.
            head_repo: pr.head.repo.and_then(|r| r.full_name).unwrap_or_default(),
            head_ref: pr.head.ref_field,
            base_ref: pr.base.ref_field,
            labels: pr.labels.into_iter().flatten().map(|l| l.name).collect(),
            url: pr.html_url.map(String::from),
            merged_by: pr.merged_by.map(|a| a.login),
        }
    }
}
