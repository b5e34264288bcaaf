//! `GET /` and `/versions`: the version document, as upstream serves it (300 Multiple Choices).

use poem::Request;
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use super::{
    ApiTags,
    error::{OpResult, ops},
};

#[derive(Debug, Object)]
#[oai(rename = "Link")]
pub struct Link {
    pub href: String,
    pub rel: String,
}

#[derive(Debug, Object)]
#[oai(rename = "Version")]
pub struct Version {
    pub id: String,
    pub status: String,
    pub links: Vec<Link>,
    pub min_version: String,
    pub max_version: String,
}

#[derive(Debug, Object)]
#[oai(rename = "VersionList")]
pub struct Versions {
    pub versions: Vec<Version>,
}

#[derive(ApiResponse)]
pub enum VersionsResponse {
    /// The API versions this server offers.
    #[oai(status = 300)]
    MultipleChoices(Json<Versions>),
}

pub struct VersionsApi;

fn versions(req: &Request) -> VersionsResponse {
    let host = req
        .headers()
        .get(poem::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or("localhost");
    VersionsResponse::MultipleChoices(Json(Versions {
        versions: vec![Version {
            id: "v1.0".into(),
            status: "CURRENT".into(),
            links: vec![Link {
                href: format!("http://{host}/v1"),
                rel: "self".into(),
            }],
            min_version: "1.0".into(),
            max_version: "1.0".into(),
        }],
    }))
}

#[OpenApi(tag = "ApiTags::Versions")]
impl VersionsApi {
    /// List API versions
    #[oai(path = "/", method = "get", operation_id = "listVersions")]
    async fn root(&self, req: &Request) -> OpResult<VersionsResponse, ops::ListVersions> {
        Ok(versions(req))
    }

    /// List API versions (alias of `/`)
    #[oai(path = "/versions", method = "get", operation_id = "listVersionsAlias")]
    async fn versions(&self, req: &Request) -> OpResult<VersionsResponse, ops::ListVersionsAlias> {
        Ok(versions(req))
    }
}
