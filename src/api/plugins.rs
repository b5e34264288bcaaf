//! `/v1/plugins`: the resource plugins this server offers, so that clients can discover them.
//! The seed leaves this API "TBD" and upstream answers 500; ours lists `physical:host`.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{Object, OpenApi, payload::Json};

use super::{
    ApiTags,
    error::{OpResult, ops},
};
use crate::{
    auth::Caller,
    domain::lease::{BeforeEnd, PHYSICAL_HOST},
    service::Services,
};

/// One parameter a reservation of this plugin takes.
#[derive(Debug, Object)]
#[oai(rename = "PluginParameter")]
pub struct PluginParameter {
    pub name: String,
    /// `integer` or `string`.
    #[oai(rename = "type")]
    pub kind: String,
    pub required: bool,
    pub description: String,
}

/// A resource plugin.
#[derive(Debug, Object)]
#[oai(rename = "Plugin")]
pub struct PluginView {
    /// The `resource_type` reservations name.
    pub resource_type: String,
    pub description: String,
    pub reservation_parameters: Vec<PluginParameter>,
    /// Values a reservation's `before_end` may take.
    pub before_end_actions: Vec<String>,
    /// What `before_end: "default"` does on this server.
    pub default_before_end_action: String,
    /// Minutes before the end at which `before_end_lease` fires when no `before_end_date` is given
    /// (0: no such event).
    pub minutes_before_end_lease: i64,
}

#[derive(Debug, Object)]
#[oai(rename = "PluginList")]
pub struct PluginList {
    pub plugins: Vec<PluginView>,
}

fn param(name: &str, kind: &str, required: bool, description: &str) -> PluginParameter {
    PluginParameter {
        name: name.into(),
        kind: kind.into(),
        required,
        description: description.into(),
    }
}

pub struct PluginsApi;

#[OpenApi(tag = "ApiTags::Plugins")]
impl PluginsApi {
    /// List resource plugins
    #[oai(path = "/v1/plugins", method = "get", operation_id = "listPlugins")]
    async fn list_plugins(
        &self,
        svc: Data<&Arc<Services>>,
        caller: Data<&Caller>,
    ) -> OpResult<Json<PluginList>, ops::ListPlugins> {
        let s = svc.plugin_settings(&caller)?;
        Ok(Json(PluginList {
            plugins: vec![PluginView {
                resource_type: PHYSICAL_HOST.into(),
                description: "Whole compute hosts, reserved exclusively for the lease's window"
                    .into(),
                reservation_parameters: vec![
                    param(
                        "min",
                        "integer",
                        true,
                        "fewest hosts the lease accepts (>= 1)",
                    ),
                    param(
                        "max",
                        "integer",
                        true,
                        "most hosts the lease wants (>= min)",
                    ),
                    param(
                        "hypervisor_properties",
                        "string",
                        false,
                        "JSON filter on host columns, e.g. [\">=\", \"$vcpus\", \"4\"]",
                    ),
                    param(
                        "resource_properties",
                        "string",
                        false,
                        "JSON filter on extra capabilities, e.g. [\"==\", \"$gpu\", \"true\"]",
                    ),
                    param(
                        "before_end",
                        "string",
                        false,
                        "action before the lease ends: \"\", \"default\" or \"snapshot\"",
                    ),
                ],
                before_end_actions: BeforeEnd::all().map(|b| b.to_string()).collect(),
                default_before_end_action: s.physical_host.before_end.clone(),
                minutes_before_end_lease: s.manager.minutes_before_end_lease,
            }],
        }))
    }
}
