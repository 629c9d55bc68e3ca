//! The registry against the real broker: Confluent API shapes and codes,
//! compatibility enforcement, durability across restarts, two instances
//! agreeing on ids, and the reviewed schemas staying compatible with their
//! own history in git.

#![allow(missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use joinery_registry::compat::{check, Level};
use joinery_runtime::kafka::KafkaSettings;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Instance {
    url: String,
    cancel: CancellationToken,
    task: JoinHandle<Result<()>>,
}

fn kafka(namespace: &str) -> KafkaSettings {
    KafkaSettings {
        brokers: std::env::var("JOINERY_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
        partitions: 1,
        replication: 1,
        namespace: namespace.to_owned(),
    }
}

fn namespace(test: &str) -> String {
    format!("{test}-{}.", uuid::Uuid::new_v4().simple())
}

async fn start(kafka: KafkaSettings) -> Result<Instance> {
    joinery_runtime::telemetry::init_tracing();
    let listen: SocketAddr = joinery_runtime::http::spare_loopback_addr()?;
    let cancel = CancellationToken::new();
    let config = joinery_registry::RegistryConfig { listen, kafka };
    let task = tokio::spawn(joinery_registry::run(config, cancel.clone()));
    let url = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if task.is_finished() {
            bail!("registry stopped while starting: {:?}", task.await);
        }
        if reqwest::get(format!("{url}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(Instance { url, cancel, task });
        }
        if Instant::now() > deadline {
            bail!("registry not ready in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Instance {
    async fn stop(self) -> Result<()> {
        self.cancel.cancel();
        self.task.await?
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .header("content-type", "application/vnd.schemaregistry.v1+json");
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    async fn register(&self, subject: &str, schema: &str) -> Result<(u16, Value)> {
        self.call(
            reqwest::Method::POST,
            &format!("/subjects/{subject}/versions"),
            Some(json!({"schema": schema})),
        )
        .await
    }
}

fn record(fields: &str) -> String {
    format!(
        r#"{{"type":"record","name":"Exit","namespace":"gov.joinery.test","fields":[{fields}]}}"#
    )
}

const V1: &str = r#"{"name":"event_id","type":"string"},{"name":"reason","type":{"type":"enum","name":"Reason","symbols":["COMPLETED","WITHDREW"]}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compatibility_is_enforced_with_reasons_that_name_the_field() -> Result<()> {
    let r = start(kafka(&namespace("reg-compat"))).await?;
    let subject = "joinery.events.dfe-gov.joinery.test.Exit";
    let (s, body) = r
        .call(
            reqwest::Method::PUT,
            &format!("/config/{subject}"),
            Some(json!({"compatibility": "FULL_TRANSITIVE"})),
        )
        .await?;
    assert_eq!(
        (s, body),
        (200, json!({"compatibility": "FULL_TRANSITIVE"}))
    );

    let (s, v1) = r.register(subject, &record(V1)).await?;
    assert_eq!(s, 200, "{v1}");
    let (s, again) = r.register(subject, &record(V1)).await?;
    assert_eq!(
        (s, &again),
        (200, &v1),
        "registering the same schema is idempotent"
    );

    let v2 = record(&format!(
        r#"{V1},{{"name":"area_code","type":["null","string"],"default":null}}"#
    ));
    let (s, id2) = r.register(subject, &v2).await?;
    assert_eq!(
        s, 200,
        "an optional field with a default is accepted: {id2}"
    );
    assert_ne!(id2["id"], v1["id"]);

    // Old and new producers are both read by a reader on v2.
    let (w1, w2) = (
        apache_avro::Schema::parse_str(&record(V1))?,
        apache_avro::Schema::parse_str(&v2)?,
    );
    use apache_avro::types::Value as A;
    let old = joinery_wire::codec::encode_value(
        &w1,
        A::Record(vec![
            ("event_id".into(), A::String("e1".into())),
            ("reason".into(), A::Enum(0, "COMPLETED".into())),
        ]),
    )?;
    let new = joinery_wire::codec::encode_value(
        &w2,
        A::Record(vec![
            ("event_id".into(), A::String("e2".into())),
            ("reason".into(), A::Enum(1, "WITHDREW".into())),
            (
                "area_code".into(),
                A::Union(1, Box::new(A::String("E08000025".into()))),
            ),
        ]),
    )?;
    let read_old = joinery_wire::codec::decode_value(&w1, &w2, &old)?;
    let read_new = joinery_wire::codec::decode_value(&w2, &w2, &new)?;
    assert!(
        format!("{read_old:?}").contains("Null"),
        "the missing field takes its default: {read_old:?}"
    );
    assert!(format!("{read_new:?}").contains("E08000025"));

    let without_reason = record(
        r#"{"name":"event_id","type":"string"},{"name":"area_code","type":["null","string"],"default":null}"#,
    );
    let (s, body) = r.register(subject, &without_reason).await?;
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["error_code"], 409);
    let msg = body["message"].as_str().unwrap_or_default();
    assert!(msg.contains("'reason'") && msg.contains("default"), "{msg}");

    let retyped = record(
        r#"{"name":"event_id","type":"long"},{"name":"reason","type":{"type":"enum","name":"Reason","symbols":["COMPLETED","WITHDREW"]}},{"name":"area_code","type":["null","string"],"default":null}"#,
    );
    let (s, body) = r.register(subject, &retyped).await?;
    assert_eq!(s, 409);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("'event_id'"),
        "{body}"
    );

    let (s, body) = r
        .call(
            reqwest::Method::POST,
            &format!("/compatibility/subjects/{subject}/versions/latest"),
            Some(json!({"schema": retyped})),
        )
        .await?;
    assert_eq!(s, 200);
    assert_eq!(body["is_compatible"], false);
    assert!(body["messages"].as_array().is_some_and(|m| !m.is_empty()));
    let (_, body) = r
        .call(
            reqwest::Method::GET,
            &format!("/subjects/{subject}/versions"),
            None,
        )
        .await?;
    assert_eq!(body, json!([1, 2]), "rejected schemas made no version");
    r.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_with_confluent_shapes_and_codes() -> Result<()> {
    let r = start(kafka(&namespace("reg-api"))).await?;
    let (s, b) = r
        .call(reqwest::Method::GET, "/subjects/nope/versions", None)
        .await?;
    assert_eq!((s, b["error_code"].clone()), (404, json!(40401)));
    let (s, b) = r
        .call(reqwest::Method::GET, "/schemas/ids/999", None)
        .await?;
    assert_eq!((s, b["error_code"].clone()), (404, json!(40403)));
    let (s, b) = r.register("s", "{\"type\": \"recordd\"}").await?;
    assert_eq!((s, b["error_code"].clone()), (422, json!(42201)));
    let (s, b) = r
        .call(
            reqwest::Method::PUT,
            "/config",
            Some(json!({"compatibility": "SIDEWAYS"})),
        )
        .await?;
    assert_eq!((s, b["error_code"].clone()), (422, json!(42203)));
    let (_, b) = r.call(reqwest::Method::GET, "/config", None).await?;
    assert_eq!(b, json!({"compatibilityLevel": "BACKWARD_TRANSITIVE"}));
    let (_, b) = r.call(reqwest::Method::GET, "/mode", None).await?;
    assert_eq!(b, json!({"mode": "READWRITE"}));

    let (_, id) = r.register("s", &record(V1)).await?;
    let id = id["id"].as_u64().unwrap_or_default();
    let (s, b) = r
        .call(reqwest::Method::GET, "/subjects/s/versions/latest", None)
        .await?;
    assert_eq!(s, 200);
    assert_eq!(
        (b["subject"].clone(), b["version"].clone(), b["id"].clone()),
        (json!("s"), json!(1), json!(id))
    );
    let (s, b) = r
        .call(reqwest::Method::GET, "/subjects/s/versions/7", None)
        .await?;
    assert_eq!((s, b["error_code"].clone()), (404, json!(40402)));
    let (_, b) = r
        .call(
            reqwest::Method::POST,
            "/subjects/s",
            Some(json!({"schema": record(V1)})),
        )
        .await?;
    assert_eq!(b["version"], 1);
    let (_, b) = r
        .call(
            reqwest::Method::GET,
            &format!("/schemas/ids/{id}/versions"),
            None,
        )
        .await?;
    assert_eq!(b, json!([{"subject": "s", "version": 1}]));
    let (s, b) = r
        .call(
            reqwest::Method::GET,
            &format!("/schemas/ids/{id}/schema"),
            None,
        )
        .await?;
    assert_eq!(s, 200);
    assert_eq!(b["name"], "Exit");
    let (s, b) = r
        .call(reqwest::Method::DELETE, "/subjects/s/versions/1", None)
        .await?;
    assert_eq!((s, b), (200, json!(1)));
    let (s, _) = r
        .call(reqwest::Method::GET, "/subjects/s/versions", None)
        .await?;
    assert_eq!(s, 404, "a subject whose only version is deleted is gone");
    let (s, _) = r
        .call(reqwest::Method::GET, &format!("/schemas/ids/{id}"), None)
        .await?;
    assert_eq!(
        s, 200,
        "a deleted version's schema id still resolves for old records"
    );
    r.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_survive_restarts_and_two_instances_agree() -> Result<()> {
    let k = kafka(&namespace("reg-durable"));
    let a = start(k.clone()).await?;
    let b = start(k.clone()).await?;
    let schemas: Vec<String> = (0..6)
        .map(|i| record(&format!(r#"{{"name":"f{i}","type":"string"}}"#)))
        .collect();
    // Register on both instances at once: the log decides, and both agree.
    let mut ids = Vec::new();
    for (i, s) in schemas.iter().enumerate() {
        let (subject, other) = (format!("subject-{i}"), format!("other-{i}"));
        let (ra, rb) = tokio::join!(a.register(&subject, s), b.register(&other, s));
        let ((sa, ia), (sb, ib)) = (ra?, rb?);
        assert_eq!((sa, sb), (200, 200));
        assert_eq!(ia, ib, "the same schema has one id on both instances");
        ids.push(ia["id"].clone());
    }
    let distinct: std::collections::HashSet<String> = ids.iter().map(Value::to_string).collect();
    assert_eq!(
        distinct.len(),
        schemas.len(),
        "different schemas never share an id: {ids:?}"
    );
    for (s, id) in schemas.iter().zip(&ids) {
        let (_, from_b) = b
            .call(reqwest::Method::GET, &format!("/schemas/ids/{id}"), None)
            .await?;
        assert_eq!(from_b["schema"].as_str(), Some(s.as_str()));
    }
    a.stop().await?;
    b.stop().await?;

    let c = start(k).await?;
    for (i, (s, id)) in schemas.iter().zip(&ids).enumerate() {
        let (_, got) = c
            .call(reqwest::Method::GET, &format!("/schemas/ids/{id}"), None)
            .await?;
        assert_eq!(
            got["schema"].as_str(),
            Some(s.as_str()),
            "id {id} kept its schema after a restart"
        );
        let (_, again) = c.register(&format!("subject-{i}"), s).await?;
        assert_eq!(&again["id"], id);
    }
    c.stop().await
}

fn git(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .output()?;
    if !out.status.success() {
        bail!(
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Department topics are read by consumers that upgrade independently of
/// producers, so every committed version of a schema must stay FULL
/// (both ways) compatible with every earlier committed version.
#[test]
fn every_schema_stays_compatible_with_its_history_in_git() -> Result<()> {
    let root = git(&["rev-parse", "--show-toplevel"])?.trim().to_owned();
    let files = git(&["-C", &root, "ls-files", "--", "schemas/*.avsc"])?;
    let mut checked = 0;
    for path in files.lines() {
        let current =
            apache_avro::Schema::parse_str(&std::fs::read_to_string(format!("{root}/{path}"))?)?;
        let commits = git(&["-C", &root, "log", "--format=%H", "--follow", "--", path])?;
        let mut history = Vec::new();
        for (n, commit) in commits.lines().rev().enumerate() {
            if let Ok(text) = git(&["-C", &root, "show", &format!("{commit}:{path}")]) {
                history.push((n as u32 + 1, apache_avro::Schema::parse_str(&text)?));
            }
        }
        let earlier: Vec<(u32, &apache_avro::Schema)> =
            history.iter().map(|(v, s)| (*v, s)).collect();
        let problems = check(Level::FullTransitive, &current, &earlier);
        assert!(
            problems.is_empty(),
            "{path} is incompatible with its history: {problems:?}"
        );
        checked += 1;
    }
    assert!(
        checked >= 13,
        "expected every schema to be checked, checked {checked}"
    );
    Ok(())
}
