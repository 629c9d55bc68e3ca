"""A department using only standard tooling: Python's confluent-kafka with
its own SchemaRegistryClient, AvroSerializer and AvroDeserializer, against
Joinery's registry and the real broker. No Joinery code on this side: the
citizen_key is computed with the documented HMAC recipe and the topic
partitioning with the Java-compatible murmur2 partitioner."""

import datetime
import hashlib
import hmac
import json
import os
import pathlib
import time
import urllib.request
import uuid

from confluent_kafka import DeserializingConsumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, StringDeserializer

ROOT = pathlib.Path(__file__).resolve().parents[2]
PSEUDONYM_KEY = b"a department's copy of the platform key, 32+ bytes"


def citizen_key(nino):
    """HMAC-SHA256 over `nino:<normalised NINO>`, as README documents."""
    normalised = nino.replace(" ", "").upper()
    return hmac.new(PSEUDONYM_KEY, f"nino:{normalised}".encode(), hashlib.sha256).hexdigest()


def topic_record_name(ctx, record_name):
    return f"{ctx.topic}-{record_name}"


def operator_metrics(stack):
    req = urllib.request.Request(
        f"{stack['projections']}/v1/missions/opportunity/metrics",
        headers={"Authorization": f"Bearer {stack['operator_token']}"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def test_a_confluent_client_publishes_an_event_that_joinery_counts_and_reads_joinerys_views(stack):
    registry = SchemaRegistryClient({"url": stack["registry"]})
    topic = f"{stack['namespace']}joinery.events.dfe"
    schema_text = (ROOT / "schemas" / "dfe" / "EducationExited.avsc").read_text()
    serializer = AvroSerializer(
        registry,
        schema_text,
        conf={"auto.register.schemas": True, "subject.name.strategy": topic_record_name},
    )
    key = citizen_key("AB 12 34 56 C")
    left = datetime.datetime(2026, 7, 20, tzinfo=datetime.timezone.utc)
    event = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": left,
        "recorded_at": left + datetime.timedelta(days=2),
        "department": "dfe",
        "citizen_key": key,
        "area_code": "E08000025",
        "birth_year_month": "2008-03",
        "provider_urn": "100001",
        "level": "LEVEL_3",
        "reason": "COMPLETED",
    }
    producer = Producer({
        "bootstrap.servers": stack["brokers"],
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
    })
    value = serializer(event, SerializationContext(topic, MessageField.VALUE))
    assert value[0] == 0, "Confluent wire format"
    schema_id = int.from_bytes(value[1:5], "big")
    subject = f"{topic}-gov.joinery.dfe.EducationExited"
    assert registry.get_latest_version(subject).schema_id == schema_id
    producer.produce(topic, key=key.encode(), value=value)
    assert producer.flush(30) == 0

    deadline = time.time() + 60
    figures = None
    while time.time() < deadline:
        figures = operator_metrics(stack)
        if figures["total"]["cohort"]["value"] == 1:
            break
        time.sleep(0.3)
    assert figures["total"]["cohort"]["value"] == 1, figures
    assert figures["total"]["outcomes"]["sustained_employment_180d"]["pending"]["value"] == 1

    consumer = DeserializingConsumer({
        "bootstrap.servers": stack["brokers"],
        "group.id": f"{stack['namespace']}pytest-reader",
        "auto.offset.reset": "earliest",
        "key.deserializer": StringDeserializer("utf_8"),
        "value.deserializer": AvroDeserializer(registry),
    })
    consumer.subscribe([f"{stack['namespace']}joinery.views.opportunity"])
    try:
        # The topic also holds watermark records (what each partition's
        # figures are final up to): valid views in the same schema that
        # count no one, told apart by their `joinery.control` header.
        view = None
        watermark = None
        deadline = time.time() + 30
        while (view is None or watermark is None) and time.time() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            headers = dict(msg.headers() or [])
            if headers.get("joinery.control") == b"watermark":
                watermark = msg
            else:
                view = msg
        assert view is not None, "no view record decoded"
        assert watermark is not None, "no watermark record decoded"
        assert watermark.key() == "joinery.watermark"
        w = watermark.value()
        assert w["citizen_key"] == "" and w["in_cohort"] is False
        assert w["outcomes"] == [] and w["snapshots"] == []
        headers = dict(watermark.headers())
        assert headers["joinery.mission"] == b"opportunity"
        assert int(headers["joinery.watermark"]) == int(w["watermark"].timestamp() * 1000)
        assert view.key() == key
        decoded = view.value()
        assert decoded["mission"] == "opportunity"
        assert decoded["citizen_key"] == key
        watermark_ms = int(decoded["watermark"].timestamp() * 1000)
        assert decoded["version"] == (max(watermark_ms, 0) << 21) | 1, "version = watermark << 21 | events"
        assert decoded["in_cohort"] is True
        assert decoded["cohort_month"] == "2026-07"
        assert decoded["outcomes"][0]["name"] == "sustained_employment_180d"
        assert decoded["outcomes"][0]["status"] == "PENDING"
        assert decoded["outcomes"][0]["anchor_at"] == left
    finally:
        consumer.close()
