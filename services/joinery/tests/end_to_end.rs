#![allow(missing_docs)]
//! End to end through the real services and the real broker: a department
//! event posted to the gateway is pseudonymised, produced in the Confluent
//! wire format, joined by the processor and counted by projections.

mod common;

use anyhow::Result;
use common::*;
use serde_json::json;

fn cohort(m: &serde_json::Value) -> Option<i64> {
    m["total"]["cohort"]["value"].as_i64()
}

fn outcome(m: &serde_json::Value, status: &str) -> Option<i64> {
    m["total"]["outcomes"]["sustained_employment_180d"][status]["value"].as_i64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_department_event_reaches_the_mission_metrics() -> Result<()> {
    let stack = Stack::start("e2e-one").await?;
    let (status, body) = stack
        .post(
            DFE_TOKEN,
            education_exited(
                "5b0f5c1e-8d2b-4c4e-9a51-0d6c3b8f2a10",
                "AB 12 34 56 C",
                "2026-07-20",
            ),
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 1);

    let m = stack
        .wait_for_metrics("the cohort to count the leaver", |m| cohort(m) == Some(1))
        .await?;
    assert_eq!(outcome(&m, "pending"), Some(1));
    assert_eq!(m["exact"], true);

    // A board reader sees the single citizen suppressed, never the exact count.
    let (status, board) = stack.metrics(BOARD_TOKEN, "").await?;
    assert_eq!(status, 200);
    assert_eq!(
        board["total"]["cohort"],
        json!({"value": null, "suppressed": true})
    );

    // Operators see the figure in Prometheus text too.
    let text = stack.prometheus_text(&stack.projections_url).await?;
    assert!(
        text.contains("joinery_mission_cohort_citizens{mission=\"opportunity\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("joinery_event_to_metric_seconds_count{mission=\"opportunity\"} 1"),
        "{text}"
    );

    let text = stack.prometheus_text(&stack.processor_url).await?;
    assert!(
        text.contains("joinery_event_to_view_seconds_count{mission=\"opportunity\"} 1"),
        "{text}"
    );

    // What reached Kafka is in the Confluent wire format and holds no raw identifier.
    let records = read_topic(&stack.kafka, &stack.kafka.topic("joinery.events.dfe"))?;
    assert_eq!(records.len(), 1);
    let Record { key, value, .. } = &records[0];
    assert_eq!(value[0], 0, "Confluent magic byte");
    for raw in ["AB123456C", "AB 12 34 56 C", "ab123456c"] {
        for bytes in [key, value] {
            assert!(
                !String::from_utf8_lossy(bytes).contains(raw),
                "raw NINO reached Kafka"
            );
        }
    }
    assert_eq!(key.len(), 64, "the key is the 64-hex-character citizen_key");

    // Each API serves its OpenAPI document (validated by tests/python).
    for base in [&stack.ingest_url, &stack.projections_url] {
        let doc: serde_json::Value = stack
            .http
            .get(format!("{base}/openapi.json"))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(doc["openapi"], "3.1.0");
    }

    // Department subjects are held to FULL_TRANSITIVE by the gateway.
    let subject = format!(
        "{}-gov.joinery.dfe.EducationExited",
        stack.kafka.topic("joinery.events.dfe")
    );
    let config: serde_json::Value = stack
        .http
        .get(format!("{}/config/{subject}", stack.registry_url))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(config, json!({"compatibilityLevel": "FULL_TRANSITIVE"}));

    for base in [
        &stack.registry_url,
        &stack.ingest_url,
        &stack.processor_url,
        &stack.projections_url,
    ] {
        for path in ["healthz", "readyz"] {
            let r = stack.http.get(format!("{base}/{path}")).send().await?;
            assert_eq!(r.status().as_u16(), 200, "{base}/{path}");
        }
    }
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resent_event_counts_once_and_sustained_employment_is_achieved() -> Result<()> {
    let stack = Stack::start("e2e-journey").await?;
    let exit = education_exited(
        "0b6a4c62-5e35-4a55-9b3c-2f0a3cbb0d01",
        "CE 00 00 01 A",
        "2026-01-10",
    );
    for _ in 0..2 {
        let (status, body) = stack.post(DFE_TOKEN, exit.clone()).await?;
        assert_eq!(status, 202, "{body}");
    }
    let jobs = json!([
        {"type": "hmrc.EmploymentStarted", "event_id": "0b6a4c62-5e35-4a55-9b3c-2f0a3cbb0d02", "occurred_at": "2026-02-01",
         "nino": "CE000001A", "employment_id": "EMP-1", "weekly_hours_band": "FROM_30"},
        {"type": "hmrc.EmploymentEnded", "event_id": "0b6a4c62-5e35-4a55-9b3c-2f0a3cbb0d03", "occurred_at": "2026-06-30",
         "nino": "ce000001a", "employment_id": "EMP-1"}
    ]);
    let (status, body) = stack.post(HMRC_TOKEN, jobs).await?;
    assert_eq!(status, 202, "{body}");
    let m = stack
        .wait_for_metrics("the outcome to be achieved", |m| {
            outcome(m, "achieved") == Some(1)
        })
        .await?;
    assert_eq!(
        cohort(&m),
        Some(1),
        "the re-sent leaver is counted once: {m}"
    );
    assert_eq!(outcome(&m, "pending"), Some(0));
    assert_eq!(
        m["total"]["outcomes"]["sustained_employment_180d"]["days_to_achieve"]["median_days"],
        22
    );
    // Cohort-month ranges.
    let (s, jan) = stack
        .metrics(
            OPERATOR_TOKEN,
            "?from=2026-01&to=2026-01&group_by=cohort_month",
        )
        .await?;
    assert_eq!((s, cohort(&jan)), (200, Some(1)), "{jan}");
    assert_eq!(jan["groups"][0]["key"], "2026-01");
    let (_, later) = stack.metrics(OPERATOR_TOKEN, "?from=2026-02").await?;
    assert_eq!(cohort(&later), Some(0), "{later}");
    // Areas over a range of cohort months.
    let (s, areas) = stack
        .metrics(OPERATOR_TOKEN, "?from=2026-01&to=2026-01&group_by=area")
        .await?;
    assert_eq!(s, 200, "{areas}");
    assert_eq!(areas["groups"][0]["key"], "E08000025", "{areas}");
    assert_eq!(areas["groups"][0]["cohort"]["value"], 1, "{areas}");
    let (_, none) = stack
        .metrics(OPERATOR_TOKEN, "?from=2026-02&group_by=area")
        .await?;
    assert_eq!(none["groups"], json!([]), "{none}");
    for bad in ["?from=2026-13", "?from=2026-03&to=2026-01"] {
        let (s, body) = stack.metrics(OPERATOR_TOKEN, bad).await?;
        assert_eq!(s, 400, "{bad}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecodable_records_are_dead_lettered_and_processing_goes_on() -> Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let stack = Stack::start("e2e-dlq").await?;
    let producer: FutureProducer = stack.kafka.producer("joinery-test").create()?;
    let topic = stack.kafka.topic("joinery.events.dfe");
    producer
        .send(
            FutureRecord::to(&topic)
                .key("not-a-citizen")
                .payload("{\"json\": \"is not avro\"}"),
            std::time::Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    let (status, _) = stack
        .post(
            DFE_TOKEN,
            education_exited(
                "7d1f2a4e-0c8b-4c8e-8f0a-3b9c2d1e0f44",
                "HJ123456D",
                "2026-03-01",
            ),
        )
        .await?;
    assert_eq!(status, 202);
    stack
        .wait_for_metrics("the valid event after the bad one", |m| {
            cohort(m) == Some(1)
        })
        .await?;

    let dead = read_topic(&stack.kafka, &stack.kafka.topic("joinery.deadletter"))?;
    assert_eq!(dead.len(), 1, "exactly the bad record is dead-lettered");
    let Record {
        key,
        value,
        headers,
        ..
    } = &dead[0];
    assert_eq!(key.as_slice(), b"not-a-citizen");
    assert_eq!(
        value.as_slice(),
        b"{\"json\": \"is not avro\"}",
        "the original bytes are kept"
    );
    let h = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(h("joinery.reason").as_deref(), Some("wrong_magic_byte"));
    assert_eq!(h("joinery.source.topic"), Some(topic));
    assert!(h("joinery.source.offset").is_some() && h("joinery.source.partition").is_some());
    let text = stack.prometheus_text(&stack.processor_url).await?;
    assert!(text.contains("reason=\"wrong_magic_byte\""), "{text}");
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_services_resume_from_their_state_without_double_counting() -> Result<()> {
    let mut stack = Stack::start("e2e-restart").await?;
    let (s, _) = stack
        .post(
            DFE_TOKEN,
            education_exited(
                "3c0e7d0a-1111-4a55-9b3c-2f0a3cbb0d01",
                "KL111111A",
                "2026-04-01",
            ),
        )
        .await?;
    assert_eq!(s, 202);
    stack
        .wait_for_metrics("the first leaver", |m| cohort(m) == Some(1))
        .await?;

    if let Some(p) = stack.projections.take() {
        p.stop().await?;
    }
    if let Some(p) = stack.processor.take() {
        p.stop().await?;
    }
    stack.start_processor().await?;
    stack.start_projections().await?;

    let (s, _) = stack
        .post(
            DFE_TOKEN,
            education_exited(
                "3c0e7d0a-2222-4a55-9b3c-2f0a3cbb0d01",
                "KL222222B",
                "2026-04-02",
            ),
        )
        .await?;
    assert_eq!(s, 202);
    let m = stack
        .wait_for_metrics("the second leaver", |m| cohort(m) == Some(2))
        .await?;
    assert_eq!(outcome(&m, "pending"), Some(2));
    // Views only: the watermark records among them say what each
    // partition's figures are final up to.
    let views: Vec<Record> = read_topic(
        &stack.kafka,
        &stack.kafka.topic("joinery.views.opportunity"),
    )?
    .into_iter()
    .filter(|r| r.headers.iter().all(|(k, _)| k != "joinery.control"))
    .collect();
    assert_eq!(
        views.len(),
        2,
        "each citizen's view published once, none republished after the restart"
    );
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_refuses_bad_requests_with_a_reason() -> Result<()> {
    let stack = Stack::start("e2e-refusals").await?;
    let event = education_exited(
        "9e8d7c6b-5a49-4838-a726-150413021100",
        "AB123456C",
        "2026-05-05",
    );

    let r = stack
        .http
        .post(format!("{}/v1/events", stack.ingest_url))
        .json(&event)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.text().await?.contains("bearer token"));

    let (status, body) = stack.post(HMRC_TOKEN, event.clone()).await?;
    assert_eq!(status, 403);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("only dfe may publish")),
        "{body}"
    );

    let mut bad = event.clone();
    bad["reason"] = json!("BORED");
    let (status, body) = stack.post(DFE_TOKEN, json!([event, bad])).await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["rejected"][0]["index"], 1);
    assert_eq!(body["rejected"][0]["errors"][0]["field"], "reason");
    assert!(
        read_topic(&stack.kafka, &stack.kafka.topic("joinery.events.dfe"))?.is_empty(),
        "all-or-nothing: nothing produced"
    );

    let too_many: Vec<serde_json::Value> = (0..1001)
        .map(|i| {
            education_exited(
                &format!("00000000-0000-4000-8000-{i:012}"),
                "AB123456C",
                "2026-05-05",
            )
        })
        .collect();
    let (status, body) = stack.post(DFE_TOKEN, json!(too_many)).await?;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("limit is 1000")),
        "{body}"
    );
    let r = stack
        .http
        .post(format!("{}/v1/events", stack.ingest_url))
        .bearer_auth(DFE_TOKEN)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 413);
    assert!(
        r.text().await?.contains("exceeds"),
        "the body limit is stated"
    );

    // A token added to the token file works without a restart.
    let (status, _) = stack.post("a-new-dfe-token", event.clone()).await?;
    assert_eq!(status, 401);
    let mut tokens = std::fs::read_to_string(&stack.tokens)?;
    tokens.push_str(&format!(
        "{} department:dfe\n",
        joinery_runtime::auth::hash_token("a-new-dfe-token")
    ));
    std::fs::write(&stack.tokens, tokens)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (status, body) = stack.post("a-new-dfe-token", event.clone()).await?;
        if status == 202 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new token was never accepted: {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }

    let (status, body) = stack.metrics(BOARD_TOKEN, "?group_by=colour").await?;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("group_by=area")),
        "{body}"
    );
    let r = stack
        .http
        .get(format!(
            "{}/v1/missions/nope/metrics",
            stack.projections_url
        ))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 404);
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_mission_is_backfilled_from_the_log_by_rebuild() -> Result<()> {
    let mut stack = Stack::start("e2e-rebuild").await?;
    // The live processor predates safer_streets: its definitions lack it.
    let old_defs = stack.dir.path().join("old-missions");
    std::fs::create_dir_all(&old_defs)?;
    for f in ["capabilities.toml", "opportunity.toml"] {
        std::fs::copy(missions_dir().join(f), old_defs.join(f))?;
    }
    if let Some(p) = stack.processor.take() {
        p.stop().await?;
    }
    stack.start_processor_with_missions(old_defs).await?;

    let release = json!({"type": "moj.ReleasedFromCustody", "event_id": "6f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
        "occurred_at": "2026-02-01", "nino": "MN123456A", "area_code": "E08000025",
        "establishment_code": "MDI", "release_type": "LICENCE"});
    let (s, body) = stack.post(MOJ_TOKEN, release).await?;
    assert_eq!(s, 202, "{body}");
    let (s, _) = stack
        .post(
            DFE_TOKEN,
            education_exited(
                "6f1e2d3c-0000-4978-8695-a4b3c2d1e0f9",
                "MN123456A",
                "2026-02-02",
            ),
        )
        .await?;
    assert_eq!(s, 202);
    // The live processor has seen both events (the later one is counted).
    stack
        .wait_for_metrics("the live mission to count the leaver", |m| {
            cohort(m) == Some(1)
        })
        .await?;
    let (_, before) = stack
        .mission_metrics("safer_streets", OPERATOR_TOKEN, "")
        .await?;
    assert_eq!(
        before["total"]["cohort"]["value"], 0,
        "nothing evaluated safer_streets yet: {before}"
    );

    // Backfill the new mission over the retained log; it stops by itself.
    stack
        .rebuild("safer_streets", missions_dir(), "rebuild-safer-streets")
        .await?;

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, after) = stack
            .mission_metrics("safer_streets", OPERATOR_TOKEN, "")
            .await?;
        if after["total"]["cohort"]["value"] == 1 {
            let pending = &after["total"]["outcomes"]["proven_reoffence_12m"]["pending"]["value"];
            assert_eq!(pending, 1, "{after}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the backfill never reached the metrics: {after}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, live) = stack.metrics(OPERATOR_TOKEN, "").await?;
    assert_eq!(
        cohort(&live),
        Some(1),
        "the live mission is untouched by the rebuild"
    );
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joinery_publish_sends_a_file_and_reports_bad_lines() -> Result<()> {
    let stack = Stack::start("e2e-publish").await?;
    let mut lines = Vec::new();
    for (i, nino) in ["PA000001A", "PA000002A", "PA000003A"].iter().enumerate() {
        let mut e = education_exited(
            &format!("1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5{i}"),
            nino,
            "2026-03-0{i}1",
        );
        if i == 1 {
            // A good event after a bad line still goes through.
            lines.push(json!({"type": "dfe.EducationExited", "event_id": "1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a59", "nino": "PA000009A", "occurred_at": "yesterday"}).to_string());
        }
        e["occurred_at"] = json!(format!("2026-03-0{}", i + 1));
        lines.push(e.to_string());
    }
    let file = stack.dir.path().join("events.ndjson");
    std::fs::write(&file, lines.join("\n\n") + "\n")?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_joinery"))
        .args(["publish", file.to_str().unwrap_or_default(), "--batch", "2"])
        .env("JOINERY_INGEST_URL", &stack.ingest_url)
        .env("JOINERY_TOKEN", DFE_TOKEN)
        .output()?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a rejected line makes the exit status 1; {stdout} {stderr}"
    );
    assert!(stdout.contains("3 accepted, 1 rejected"), "{stdout}");
    assert!(
        stderr.contains("line 3: occurred_at") && stderr.contains("provider_urn"),
        "the bad line is reported by its line number: {stderr}"
    );
    stack
        .wait_for_metrics("the three published leavers", |m| cohort(m) == Some(3))
        .await?;
    stack.shutdown().await
}
