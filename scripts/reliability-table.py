#!/usr/bin/env python3
"""Prints RELIABILITY.md's table from the counts the last reliability run wrote.

Usage: cargo test --test reliability && python3 scripts/reliability-table.py
Reads target/tmp/reliability/*.json (one file per scenario, written by tests/reliability).
"""
import json
import pathlib
import sys

DIR = pathlib.Path(__file__).resolve().parent.parent / "target" / "tmp" / "reliability"


def load(name):
    path = DIR / f"{name}.json"
    if not path.exists():
        sys.exit(f"{path} is missing: run `cargo test --test reliability` first")
    return json.loads(path.read_text())["counts"]


def row(scenario, sent, acked, found, dups, lost, note):
    return f"| {scenario} | {sent} | {acked} | {found} | {dups} | {lost} | {note} |"


def main():
    out = [
        "| scenario | sent | confirmed / 200 | found in broker | duplicates | lost | what else was counted |",
        "|---|---|---|---|---|---|---|",
    ]
    c = load("crash")
    b = c["brokers"]
    out.append(row(
        f"crash: SIGKILL ×{c['kills']}, pull → Kafka + RabbitMQ + NATS",
        c["sent"], c["confirmed"],
        " / ".join(f"{b[k]['found']}" for k in ("kafka", "rabbitmq", "nats")),
        " / ".join(f"{b[k]['duplicates']}" for k in ("kafka", "rabbitmq", "nats")),
        sum(b[k]["lost"] for k in b),
        f"killed at {c['killed_at_confirmed']} confirmed; {c['redeliveries']} redeliveries; "
        f"{c['seconds']:.0f} s",
    ))
    for broker in ("kafka", "rabbitmq", "nats"):
        o = load(f"outage-{broker}")
        p, q = o["pull"], o["push"]
        out.append(row(
            f"{broker} down {o['outage_secs']} s (handle lifetime {o['handle_lifetime_ms'] / 1000:.0f} s), pull + push with spool",
            f"{p['sent']} + {q['sent']}", f"{p['confirmed']} + {q['answered_200']}",
            f"{p['found']} + {q['found']}", o["broker"]["duplicates"], p["lost"] + q["lost"],
            f"{p['confirmed_during_outage_after_2s']} confirmed while down; "
            f"{q['spooled_during_outage']:.0f} push spooled; VOD gave up on {q['vod_gave_up_or_not_200']}; "
            f"{p['redeliveries']} redeliveries",
        ))
    v = load("vod-faults")
    ph = v["phases"]
    out.append(row(
        "VOD faults in turn: 5xx, timeouts, throttling, expired handles",
        v["sent"], v["confirmed"], v["found"], v["duplicates"], v["lost"],
        f"{ph['errors']['injected_errors']} InternalError, {ph['timeouts']['transient_pulls']:.0f} pull timeouts, "
        f"{v['throttled']} throttled, {v['confirm_rejections']} expired confirms; "
        f"{v['redeliveries']} redeliveries, {v['duplicates_suppressed']:.0f} recognised by id",
    ))
    f = load("confirm-fails-after-publish")
    out.append(row(
        "ConfirmEvents fails after the publish",
        f["sent"], f["confirmed"], f["published"], f["duplicates"], f["lost"],
        f"{f['redeliveries']} redeliveries, {f['duplicates_suppressed']:.0f} confirmed from the acknowledged-id record",
    ))
    r = load("refusal-queue-full")
    out.append(row(
        f"RabbitMQ queue full ({r['queue_limit']}, reject-publish)",
        r["sent"], r["confirmed"], r["found"], r["duplicates"], r["lost"],
        f"{r['confirmed_while_full']} confirmed while full (= what the queue kept); "
        f"{r['redeliveries_while_full']} refused hand-outs came back",
    ))
    t = load("refusal-too-large-unroutable")
    out.append(row(
        "too large (RabbitMQ 512 KiB) and unroutable (AMQP key, NATS subject), pull + push",
        f"{t['pulled']} + {t['pushed']}", f"{t['confirmed']} + {t['answered_200']}",
        f"{t['delivered_to_queue']} + {t['dead_lettered']} dead-lettered", "–", t["lost"],
        f"{t['expected_dead']} expected in the dead letter; {t['in_stream']} in a NATS stream",
    ))
    s = load("sigterm-under-load")
    out.append(row(
        "SIGTERM under load (30 s handle lifetime), then a second bridge",
        s["sent"], s["confirmed"], f"{s['file']['messages']} file / {s['nats']['messages']} NATS",
        f"{s['file']['duplicates']} / {s['nats']['duplicates']}", s["file"]["lost"] + s["nats"]["lost"],
        f"exit 0: {'yes' if s['exit_code_zero'] else 'NO'} after {s['exit_seconds']} s; "
        f"{s['handed_out_unconfirmed_at_exit']} handed out but unconfirmed at exit; "
        f"{s['redeliveries']} redeliveries",
    ))
    a = load("partition-all-brokers")
    b = a["brokers"]
    order = ("kafka", "rabbit", "nats")
    out.append(row(
        f"silent partition: every broker {a['silence_secs']} s mid-stream (handle lifetime "
        f"{a['handle_lifetime_ms'] / 1000:.0f} s), pull → Kafka + RabbitMQ + NATS",
        a["sent"], a["confirmed"], " / ".join(f"{b[k]['messages'] - b[k]['duplicates']}" for k in order),
        " / ".join(f"{b[k]['duplicates']}" for k in order), sum(b[k]["lost"] for k in order),
        f"{a['confirmed_during_silence_after_2s']} confirmed while silent; confirms again "
        f"{a['confirms_resumed_secs_after_heal']} s after the heal (publishes: "
        + ", ".join(f"{k} {b[k]['recovery_secs']} s" for k in order)
        + f"); all confirmed {a['all_confirmed_secs_after_heal']} s after; "
        f"exit 0: {'yes' if a['exit_code_zero'] else 'NO'} after {a['exit_seconds']} s",
    ))
    o = load("partition-one-broker")
    b = o["brokers"]
    out.append(row(
        f"silent partition: RabbitMQ {o['silence_secs']} s, Kafka and NATS healthy",
        o["sent"], o["confirmed"], " / ".join(f"{b[k]['messages'] - b[k]['duplicates']}" for k in order),
        " / ".join(f"{b[k]['duplicates']}" for k in order), sum(b[k]["lost"] for k in order),
        f"{o['redeliveries']} redeliveries while RabbitMQ was silent; publishes skipped because "
        f"the sink held the event: Kafka {o['skipped_publishes']['kafka']:.0f}, NATS "
        f"{o['skipped_publishes']['nats']:.0f}",
    ))
    for name, label in [
        ("sigterm-after-silent-rabbit", "SIGTERM 1 s after RabbitMQ went silent"),
        ("sigterm-after-silent-nats", "SIGTERM 1 s after NATS went silent"),
        ("sigterm-after-silent-kafka", "SIGTERM 1 s after Kafka went silent"),
        ("sigterm-nats-killed-spool", "SIGTERM with NATS killed and the spool holding pushes"),
        ("sigterm-rabbitmq-stopped", "SIGTERM with RabbitMQ stopped (stop_app)"),
    ]:
        g = load(name)
        out.append(row(
            f"{label} (drain limit {g['drain_timeout_secs']} s), then a second bridge",
            f"{g['sent']} + {g['pushed']}", f"{g['confirmed']} + {g['answered_200']}",
            "all", "–", g["lost"],
            f"exit 0: {'yes' if g['exit_code_zero'] else 'NO'} after {g['exit_seconds']} s; "
            f"{g['spooled_at_signal']:.0f} spooled at the signal",
        ))
    f = load("fleet-shared-record")
    fleet = ("nats", "rabbitmq", "kafka")
    for name, label in [("shared", "shared record in Redis"), ("plain", "no shared record (same run)")]:
        g, b = f[name], f[name]["brokers"]
        out.append(row(
            f"fleet: {f['replicas']} replicas, ConfirmEvents failing 40 s (handles live 30 s), then a "
            f"rolling restart; pull → NATS + RabbitMQ + Kafka; {label}",
            f["sent_per_fleet"], g["confirmed"],
            " / ".join(f"{b[k]['messages']}" for k in fleet),
            " / ".join(f"{b[k]['extra_copies_per_event']:.3f} per event" for k in fleet),
            sum(b[k]["lost"] for k in fleet),
            f"{g['handed_out']} hand-outs, {g['redeliveries']} redeliveries; every SIGTERM exit 0: "
            f"{'yes' if f['sigterm_exit_zero'] else 'NO'}; {f['seconds']} s",
        ))
    s = load("best_effort_silent")
    order = ("nats", "kafka", "rabbitmq")
    out.append(row(
        "best effort: RabbitMQ (required = false) silent 60 s behind a proxy, NATS + Kafka "
        "required; pull at VOD's limits, 12,000 events healthy then 12,000 silent",
        s["events"], s["confirmed"], " / ".join(f"{s['held'][k]}" for k in order),
        " / ".join(f"{s['duplicates'][k]}" for k in order),
        s["nats_missing"] + s["kafka_missing"] + s["rabbit_missing"],
        f"{s['redeliveries']} redeliveries; pulled {s['silent_rate']:.0f}/s silent against "
        f"{s['healthy_rate']:.0f}/s healthy (ratio {s['ratio']}); {s['queued_at_peak']:.0f} queued "
        f"for RabbitMQ, all in it {s['rabbit_drained_after_heal_s']:.1f} s after the heal",
    ))
    q = load("best_effort_small_queue")
    out.append(row(
        f"best effort, queue of {q['capacity']}: RabbitMQ silent from the start; pull → NATS + "
        "Kafka (required) + RabbitMQ",
        q["events"], q["confirmed"], f"RabbitMQ {q['rabbit_held']}", q["rabbit_duplicates"],
        "0 (required sinks)",
        f"{q['dropped_queue_full']:.0f} counted as dropped (queue_full) = "
        f"{q['events']} - {q['rabbit_held']} RabbitMQ lacks; {q['redeliveries']} redeliveries",
    ))
    d = load("best_effort_durable_sigkill")
    out.append(row(
        "best effort, durable queue (in the spool): RabbitMQ silent, all confirmed, SIGKILL, "
        "RabbitMQ heals, a second bridge on the same spool",
        d["events"], d["confirmed"], f"RabbitMQ {d['rabbit_held']}", d["rabbit_duplicates"],
        d["rabbit_missing"],
        f"{d['queued_at_kill']:.0f} queued at the kill; {d['redeliveries']} redeliveries",
    ))
    f = load("sub_apps_fair_share")
    p99, drain, share = f["quiet_p99_ms"], f["drain_per_sec"], f["share_of_vod_bound"]
    out.append(row(
        f"{f['sub_apps']} sub-applications of one account (sub_app_ids = \"all\"), VOD's limits, "
        f"20 ms, 5 s long poll: a {f['backlog']}-event backlog in one, 10 events/s over the others; "
        "then a second backlog with two replicas, a third during their rolling restart; pull → NATS",
        f["sent"], f["confirmed"], f["nats"]["unique"], f["nats"]["duplicates"],
        f["sent"] - f["nats"]["unique"],
        f"quiet p99 wait {p99['baseline']:.0f} ms alone, {p99['with_backlog']:.0f} ms beside the "
        f"backlog, {p99['two_replicas']:.0f} ms with two replicas; backlog drained at "
        f"{drain['one_replica']:.0f}/s ({share['one_replica']:.2f} of VOD's bound), "
        f"{drain['two_replicas']:.0f}/s by two replicas ({share['two_replicas']:.2f}, "
        f"{f['throttled_share_two_replicas'] * 100:.1f} % of pulls throttled); a rolling restart "
        f"of both replicas during a third backlog, every SIGTERM exit 0: "
        f"{'yes' if all(f['rolling_restart']['sigterm_exit_zero']) else 'NO'}; "
        f"{f['redeliveries']} redeliveries",
    ))
    print("\n".join(out))


if __name__ == "__main__":
    main()
