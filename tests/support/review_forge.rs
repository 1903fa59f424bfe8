//! What a reviewer does on an on-premises forge, whichever it is: the fakes of Forgejo/Gitea
//! and GitLab both answer to this, so one journey (tests/forges.rs) runs on each.

use serde_json::Value;

/// A pull (merge) request as a reviewer sees it.
#[derive(Clone, Debug)]
pub struct Reviewed {
    pub number: u64,
    pub title: String,
    /// The source branch.
    pub head: String,
    pub open: bool,
    pub merged: bool,
}

// Only these tests call it; Send bounds on the futures are not needed.
#[allow(async_fn_in_trait)]
pub trait ReviewForge {
    /// `forge.kind`, and the example's and the webhook's name.
    fn kind(&self) -> &'static str;
    /// Points a configuration at the fake: its URL and repository, the token and the
    /// webhook secret in files in `dir`.
    fn point_at(&self, config: &mut Value, dir: &std::path::Path);
    /// Where the fake sends its deliveries (Registrar's webhook URL).
    fn send_hooks_to(&self, url: &str);
    /// The repository's name as deliveries carry it.
    fn repository(&self) -> &'static str;
    fn repo(&self) -> super::Repo;
    fn reviews(&self) -> Vec<Reviewed>;
    fn review(&self, number: u64) -> Reviewed {
        self.reviews().into_iter().find(|r| r.number == number).unwrap()
    }
    fn labels_of(&self, number: u64) -> Vec<String>;
    /// The comments on it, oldest first.
    fn comments(&self, number: u64) -> Vec<String>;
    /// The description as it is now.
    fn description(&self, number: u64) -> String;
    /// Each merge asked through the API: the number and the head it was pinned to.
    fn merges(&self) -> Vec<(u64, Option<String>)>;

    // What people do in the forge's web interface; each sends the delivery the forge would.

    /// A reviewer adds label `name`.
    async fn label(&self, number: u64, name: &str) -> reqwest::Response;
    /// Merges without telling anyone (a lost delivery).
    fn merge_quietly(&self, number: u64);
    async fn merge(&self, number: u64) -> reqwest::Response;
    /// Someone opens a pull request from their fork's branch named `branch` (one Registrar
    /// will use): its number.
    fn open_fork_request(&self, branch: &str, title: &str) -> u64;
    /// Closes without telling anyone (a lost delivery).
    fn close_quietly(&self, number: u64);
    async fn close(&self, number: u64) -> reqwest::Response;
    /// A reviewer rewrites the description (unchecks a machine, say).
    async fn edit_description(&self, number: u64, description: &str) -> reqwest::Response;
    /// A change's delivery about `repository`, carrying `secret` (none with None).
    async fn deliver_change(&self, number: u64, secret: Option<&str>, repository: &str) -> reqwest::Response;
}
