//! A client for the Confluent Schema Registry REST API. It talks to Joinery's
//! own registry by default, and to Confluent Schema Registry, Apicurio or
//! Karapace unchanged: only the URL differs.
//!
//! Writer schemas are cached by id forever (a registered id never changes
//! meaning), so the hot path of a consumer makes no HTTP call after warm-up.
//!
//! Waiting for a registry that is starting or unreachable goes through
//! [`joinery_runtime::retry`]: [`RegistryClient::register_when_ready`] at
//! start-up, [`RegistryClient::schema_when_ready`] for consumers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apache_avro::Schema;
use joinery_runtime::retry::{retry, Policy};
use parking_lot::RwLock;
use serde::Deserialize;

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached or did not answer in time. Retryable.
    #[error("schema registry at {url} is unreachable: {source}")]
    Unreachable {
        /// The registry base URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an error (e.g. 40403 schema not found, 409 incompatible).
    #[error("schema registry refused {what}: HTTP {status}, error code {code}: {message}")]
    Refused {
        /// What was asked.
        what: String,
        /// HTTP status.
        status: u16,
        /// Confluent error code (e.g. 40403).
        code: i64,
        /// The registry's message.
        message: String,
    },
    /// The registry returned a schema this client cannot parse.
    #[error("schema {id} from the registry is not valid Avro: {source}")]
    InvalidSchema {
        /// The schema id.
        id: u32,
        /// The parse error.
        #[source]
        source: Box<apache_avro::Error>,
    },
}

impl RegistryError {
    /// True when retrying later may succeed (network or server trouble).
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Refused { status, .. } => *status >= 500,
            RegistryError::InvalidSchema { .. } => false,
        }
    }

    /// True when the registry says the schema id does not exist.
    pub fn is_unknown_schema(&self) -> bool {
        matches!(self, RegistryError::Refused { code: 40403, .. })
    }
}

#[derive(Deserialize)]
struct IdBody {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: i64,
    message: String,
}

/// Client for a Confluent-compatible schema registry.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    /// Base URL, e.g. `http://127.0.0.1:8081`, without a trailing slash.
    base: String,
    /// Shared HTTP connection pool.
    http: reqwest::Client,
    /// Writer schemas by id; ids are immutable, so entries never expire.
    cache: Arc<RwLock<HashMap<u32, Arc<Schema>>>>,
}

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

impl RegistryClient {
    /// A client for the registry at `base_url`.
    pub fn new(base_url: &str) -> RegistryClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a client without TLS or proxies always builds");
        RegistryClient {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
            cache: Arc::default(),
        }
    }

    /// The registry's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    async fn check(
        &self,
        what: String,
        resp: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<reqwest::Response, RegistryError> {
        let resp = resp.map_err(|source| RegistryError::Unreachable {
            url: self.base.clone(),
            source,
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<ErrorBody>(&body) {
            Ok(e) => (e.error_code, e.message),
            Err(_) => (i64::from(status), body),
        };
        Err(RegistryError::Refused {
            what,
            status,
            code,
            message,
        })
    }

    /// Reads a successful response's JSON body.
    async fn body<T: serde::de::DeserializeOwned>(
        &self,
        resp: reqwest::Response,
    ) -> Result<T, RegistryError> {
        resp.json()
            .await
            .map_err(|source| RegistryError::Unreachable {
                url: self.base.clone(),
                source,
            })
    }

    /// Registers `schema` under `subject` (idempotent for an identical
    /// schema) and returns its global id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let resp = self
            .http
            .post(format!("{}/subjects/{subject}/versions", self.base))
            .header("content-type", CONTENT_TYPE)
            .json(&serde_json::json!({ "schema": schema }))
            .send()
            .await;
        let resp = self.check(format!("registering {subject}"), resp).await?;
        let body: IdBody = self.body(resp).await?;
        Ok(body.id)
    }

    /// Sets `subject`'s compatibility level (e.g. `FULL_TRANSITIVE`).
    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), RegistryError> {
        let resp = self
            .http
            .put(format!("{}/config/{subject}", self.base))
            .header("content-type", CONTENT_TYPE)
            .json(&serde_json::json!({ "compatibility": level }))
            .send()
            .await;
        self.check(format!("setting compatibility of {subject}"), resp)
            .await?;
        Ok(())
    }

    /// Sets the compatibility level of `subject` when one is given, then
    /// registers `schema`; while the registry is starting or unreachable it
    /// retries under [`Policy::REGISTRY_STARTING`] (30 s) before giving up.
    pub async fn register_when_ready(
        &self,
        subject: &str,
        schema: &str,
        compatibility: Option<&str>,
    ) -> Result<u32, RegistryError> {
        let what = format!("registering {subject}");
        retry(
            &Policy::REGISTRY_STARTING,
            &what,
            RegistryError::is_retryable,
            move || async move {
                if let Some(level) = compatibility {
                    self.set_compatibility(subject, level).await?;
                }
                self.register(subject, schema).await
            },
        )
        .await
    }

    /// The writer schema with global id `id`, from the cache or the
    /// registry, retrying under `policy` while the registry is unreachable
    /// or failing ([`RegistryError::is_retryable`]). Fails at once when the
    /// registry answers that it has no such id
    /// ([`RegistryError::is_unknown_schema`]) or refuses otherwise, and with
    /// the last error when `policy` gives up. With a policy that never gives
    /// up ([`Policy::REGISTRY_UNREACHABLE`]), stop waiting by dropping the
    /// future (e.g. in a `select!` on the service's cancellation).
    pub async fn schema_when_ready(
        &self,
        id: u32,
        policy: &Policy,
    ) -> Result<Arc<Schema>, RegistryError> {
        if let Some(s) = self.cached(id) {
            return Ok(s);
        }
        retry(
            policy,
            &format!("schema id {id}"),
            RegistryError::is_retryable,
            || self.schema(id),
        )
        .await
    }

    /// The writer schema with global id `id`, from the cache or the
    /// registry, asked once.
    pub async fn schema(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(s) = self.cached(id) {
            return Ok(s);
        }
        let resp = self
            .http
            .get(format!("{}/schemas/ids/{id}", self.base))
            .send()
            .await;
        let resp = self.check(format!("schema id {id}"), resp).await?;
        let body: SchemaBody = self.body(resp).await?;
        let schema = Arc::new(Schema::parse_str(&body.schema).map_err(|e| {
            RegistryError::InvalidSchema {
                id,
                source: Box::new(e),
            }
        })?);
        self.cache.write().insert(id, Arc::clone(&schema));
        Ok(schema)
    }

    /// The cached writer schema with id `id`, without any network call.
    pub fn cached(&self, id: u32) -> Option<Arc<Schema>> {
        self.cache.read().get(&id).cloned()
    }
}
