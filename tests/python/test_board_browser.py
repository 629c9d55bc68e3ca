"""The mission board in a real browser: Debian's Chromium driven by
playwright-core (tests/browser/board.mjs). This test sends a known set of
events with a third-party client (confluent-kafka), waits until the
projections hold the exact figures they imply, then lets the browser check
the page against the metrics API, the suppression of a small count, and the
page refreshing itself in place after more events arrive."""

import datetime
import json
import os
import pathlib
import subprocess
import time
import urllib.request
import uuid

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from test_confluent_client import citizen_key, topic_record_name

ROOT = pathlib.Path(__file__).resolve().parents[2]
UTC = datetime.timezone.utc
BIG_AREA, SMALL_AREA = "E08000025", "W06000015"
OUTCOME = "sustained_employment_180d"


class Departments:
    """DfE and HMRC systems producing Avro events to their topics."""

    def __init__(self, stack):
        self.registry = SchemaRegistryClient({"url": stack["registry"]})
        self.namespace = stack["namespace"]
        self.producer = Producer({
            "bootstrap.servers": stack["brokers"],
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
        })
        self.serializers = {}

    def send(self, dept, name, key, occurred, fields, area):
        topic = f"{self.namespace}joinery.events.{dept}"
        if name not in self.serializers:
            text = (ROOT / "schemas" / dept / f"{name}.avsc").read_text()
            self.serializers[name] = AvroSerializer(
                self.registry, text,
                conf={"auto.register.schemas": True, "subject.name.strategy": topic_record_name})
        event = {
            "event_id": str(uuid.uuid4()),
            "occurred_at": occurred,
            "recorded_at": occurred + datetime.timedelta(days=1),
            "department": dept,
            "citizen_key": key,
            "area_code": area,
            "birth_year_month": "2007-01",
            **fields,
        }
        value = self.serializers[name](event, SerializationContext(topic, MessageField.VALUE))
        self.producer.produce(topic, key=key.encode(), value=value)

    def leaver(self, nino, area, works):
        """Leaves education in January 2025 aged 18; starts a job that lasts
        when `works`; re-enrols in June 2026, which moves the partition's
        watermark past every deadline so that the outcome is decided."""
        key = citizen_key(nino)
        left = datetime.datetime(2025, 1, 10, tzinfo=UTC)
        self.send("dfe", "EducationExited", key, left,
                  {"provider_urn": "100001", "level": "LEVEL_3", "reason": "COMPLETED"}, area)
        if works:
            self.send("hmrc", "EmploymentStarted", key, left + datetime.timedelta(days=20),
                      {"employment_id": f"E-{nino}", "weekly_hours_band": "FROM_30"}, area)
        self.send("dfe", "EducationEnrolled", key, datetime.datetime(2026, 6, 1, tzinfo=UTC),
                  {"provider_urn": "100001", "level": "LEVEL_3", "mode": "FULL_TIME"}, area)

    def flush(self):
        assert self.producer.flush(30) == 0


def operator_total(stack):
    req = urllib.request.Request(
        f"{stack['projections']}/v1/missions/opportunity/metrics",
        headers={"Authorization": f"Bearer {stack['operator_token']}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)["total"]


def wait_for(stack, cohort, achieved, not_achieved):
    deadline = time.time() + 90
    total = None
    while time.time() < deadline:
        total = operator_total(stack)
        o = total["outcomes"].get(OUTCOME, {})
        if (total["cohort"]["value"], o.get("achieved", {}).get("value"), o.get("not_achieved", {}).get("value")) == (cohort, achieved, not_achieved):
            return
        time.sleep(0.3)
    raise AssertionError(f"projections did not reach cohort={cohort} achieved={achieved} not_achieved={not_achieved}: {total}")


def test_the_board_shows_the_apis_figures_suppresses_small_counts_and_refreshes_itself(stack):
    depts = Departments(stack)
    # 14 leavers in Birmingham who find lasting work; 3 in Cardiff who do not.
    for n in range(14):
        depts.leaver(f"BW{n:06d}A", BIG_AREA, works=True)
    for n in range(3):
        depts.leaver(f"CD{n:06d}B", SMALL_AREA, works=False)
    depts.flush()
    wait_for(stack, cohort=17, achieved=14, not_achieved=3)

    output = os.environ.get("JOINERY_TEST_OUTPUT", os.path.join(ROOT, ".joinery", "test-output"))
    output = os.path.join(output, "board")
    browser = subprocess.Popen(
        ["node", str(ROOT / "tests" / "browser" / "board.mjs")],
        cwd=ROOT / "web",
        env=dict(os.environ,
                 NODE_PATH=str(ROOT / "web" / "node_modules"),
                 BOARD_URL=stack["projections"],
                 BOARD_TOKEN=stack["board_token"],
                 BOARD_OUTPUT=output,
                 BOARD_SMALL_AREA=SMALL_AREA),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in browser.stdout:
            lines.append(line)
            if line.strip() == "READY":
                break
        assert lines and lines[-1].strip() == "READY", "".join(lines)
        # Eight more Cardiff leavers: the area's cohort crosses the threshold.
        for n in range(3, 11):
            depts.leaver(f"CD{n:06d}B", SMALL_AREA, works=False)
        depts.flush()
        wait_for(stack, cohort=25, achieved=14, not_achieved=11)
        browser.stdin.write("GO\n")
        browser.stdin.flush()
        rest, _ = browser.communicate(timeout=120)
        lines.append(rest)
    finally:
        if browser.poll() is None:
            browser.kill()
    assert browser.returncode == 0, "".join(lines)
    for shot in ("opportunity.png", "index.png", "opportunity-refreshed.png"):
        assert os.path.getsize(os.path.join(output, shot)) > 10_000, shot
