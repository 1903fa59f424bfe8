//! The HTTP API's OpenAPI 3 description, made from the handlers' own `#[utoipa::path]`
//! attributes: each route group below is what the router serves (`server::router` adds
//! only middleware to them), so the description cannot list a route that is not served,
//! nor miss one that is. Served at `/api/v1/openapi.json`; `registrar openapi` prints it,
//! and `docs/openapi.json` is the copy CI compares it with.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, api, audit, forge_hooks, github, health, lifecycle, reports, sightings};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Registrar",
        description = "Registers bare-metal machines for Tinkerbell the GitOps way: reports in, pull requests out. Every endpoint but the health checks and GitHub's webhook takes a bearer token; which one is in each operation's security.",
        license(name = "Apache-2.0")
    ),
    modifiers(&Tokens),
    tags(
        (name = "reports", description = "What machines (and the DHCP snooper) send"),
        (name = "machines", description = "Machines and their state"),
        (name = "review", description = "Approving, rejecting and choosing workflows"),
        (name = "addresses", description = "Address pools"),
        (name = "imports", description = "Bulk import of expected machines"),
        (name = "status", description = "Health, readiness, metrics"),
        (name = "forge", description = "The forge's webhooks")
    )
)]
struct Description;

/// The tokens, as security schemes.
struct Tokens;

impl Modify for Tokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(what.to_string()))
                    .build(),
            )
        };
        components.add_security_scheme(
            "bearer",
            bearer("A person's token (auth.users), the operator token, or the console's session cookie with its CSRF token"),
        );
        components.add_security_scheme(
            "report",
            bearer("A machine's own report token, or the shared report token"),
        );
        components.add_security_scheme("snoop", bearer("auth.snoop_token: registrar snoop's, for nothing else"));
        components.add_security_scheme("metrics", bearer("auth.metrics_token, or a person's token"));
        // The console's session, which the operator routes also take.
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("registrar_session"))),
        );
    }
}

pub(super) fn reports() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(reports::post_report))
        .routes(routes!(reports::register))
        .routes(routes!(reports::report_state))
}

pub(super) fn sightings() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(sightings::post_sightings))
}

pub(super) fn operator() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(api::list_machines))
        .routes(routes!(api::get_machine))
        .routes(routes!(api::approve))
        .routes(routes!(api::reject))
        .routes(routes!(api::unsuppress))
        .routes(routes!(api::set_workflow))
        .routes(routes!(lifecycle::decommission))
        .routes(routes!(lifecycle::reinventory))
        .routes(routes!(lifecycle::reprovision))
        .routes(routes!(audit::audit))
        .routes(routes!(api::pools))
        .routes(routes!(api::pool_clashes))
        .routes(routes!(api::machine_addresses))
        .routes(routes!(api::list_proposals))
        .routes(routes!(api::approve_proposal))
        .routes(routes!(api::reject_proposal))
        .routes(routes!(api::status))
        .routes(routes!(api::list_imports))
        .routes(routes!(api::get_import))
        .routes(routes!(document_json))
}

pub(super) fn imports() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(api::post_import))
}

pub(super) fn webhooks() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(github::webhook))
        .routes(routes!(forge_hooks::gitea))
        .routes(routes!(forge_hooks::gitlab))
}

pub(super) fn health() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
}

pub(super) fn metrics() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health::metrics))
}

/// The whole description, from the same groups the router serves.
pub fn document() -> utoipa::openapi::OpenApi {
    OpenApiRouter::with_openapi(Description::openapi())
        .merge(reports())
        .merge(sightings())
        .merge(operator())
        .merge(imports())
        .merge(webhooks())
        .merge(health())
        .merge(metrics())
        .into_openapi()
}

/// This description.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "status",
    responses((status = 200, description = "the OpenAPI 3 description of this API", body = Object), (status = 401, description = "no token")),
    security(("bearer" = []))
)]
pub async fn document_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(document())
}
