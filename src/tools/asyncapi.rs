//! `vodbridge asyncapi`: an AsyncAPI 3.0 document of the channels the configuration publishes
//! to, with the CloudEvents message of every event type each channel can carry — the contract
//! downstream consumers code against.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};
use vodbridge_core::{RouteAction, Target};
use vodbridge_tencent::catalog;

use crate::config::{Settings, SinkConfig};

/// The header prefix of each broker's CloudEvents binary mode.
fn header_prefix(sink: &SinkConfig) -> &'static str {
    match sink {
        SinkConfig::Kafka(_) => "ce_",
        SinkConfig::Amqp(_) => "cloudEvents_",
        SinkConfig::Nats(_) => "ce-",
        SinkConfig::Stdout(_) | SinkConfig::File(_) => "",
    }
}

/// `host:port` of a URL: no scheme, no user information, no path.
fn host_of(url: &str) -> String {
    let rest = url
        .trim()
        .split_once("://")
        .map_or(url.trim(), |(_, rest)| rest);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    rest.split('/').next().unwrap_or_default().to_owned()
}

fn server(sink: &SinkConfig) -> Option<Value> {
    let (host, protocol) = match sink {
        SinkConfig::Kafka(k) => (
            k.brokers
                .split(',')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
            "kafka",
        ),
        SinkConfig::Amqp(a) => (host_of(&a.display_url()), "amqp"),
        SinkConfig::Nats(n) => (host_of(n.url.split(',').next().unwrap_or_default()), "nats"),
        SinkConfig::Stdout(_) | SinkConfig::File(_) => return None,
    };
    Some(json!({ "host": host, "protocol": protocol }))
}

/// The message of one event type on one kind of sink.
fn message(event_type: &str, prefix: &str) -> Value {
    let mut headers = Map::new();
    let attribute = |name: &str, schema: Value| (format!("{prefix}{name}"), schema);
    for (name, schema) in [
        attribute("specversion", json!({ "const": "1.0" })),
        attribute(
            "id",
            json!({ "type": "string", "pattern": "^[0-9a-f]{32}$", "description": "Stable across redeliveries: drop duplicates by it." }),
        ),
        attribute("source", json!({ "type": "string" })),
        attribute(
            "type",
            json!({ "const": format!("com.tencentcloud.vod.{event_type}") }),
        ),
        attribute(
            "subject",
            json!({ "type": "string", "description": "FileId of the video, when the event names one." }),
        ),
        attribute("time", json!({ "type": "string", "format": "date-time" })),
        attribute("vodeventtype", json!({ "const": event_type })),
        attribute("vodsubappid", json!({ "type": "string" })),
        attribute("vodingress", json!({ "enum": ["push", "pull"] })),
        attribute("vodtaskid", json!({ "type": "string" })),
        attribute("partitionkey", json!({ "type": "string" })),
        attribute(
            "traceparent",
            json!({ "type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$", "description": "W3C Trace Context of the bridge's span (also sent as the plain traceparent header)." }),
        ),
    ] {
        headers.insert(name, schema);
    }
    let mut payload = Map::new();
    payload.insert("EventType".into(), json!({ "const": event_type }));
    if let Some(key) = catalog::payload_keys(event_type).and_then(|keys| keys.first()) {
        payload.insert((*key).into(), json!({ "type": "object", "description": format!("The {event_type} payload (see docs/vod.md); unknown fields pass through.") }));
    }
    json!({
        "name": event_type,
        "title": format!("VOD {event_type}"),
        "contentType": "application/json",
        "headers": { "type": "object", "properties": headers },
        "payload": { "type": "object", "required": ["EventType"], "properties": payload, "additionalProperties": true }
    })
}

/// Builds the document for validated settings.
#[must_use]
pub fn document(settings: &Settings) -> Value {
    let mut servers = Map::new();
    for (name, sink) in &settings.sinks {
        if let Some(server) = server(sink) {
            servers.insert(name.clone(), server);
        }
    }
    let channels = routed_channels(settings);
    let mut channel_docs = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    for (index, ((sink_name, destination), event_types)) in channels.iter().enumerate() {
        let Some(sink) = settings.sinks.get(sink_name) else {
            continue;
        };
        let id = format!("{sink_name}-{index}");
        let channel_messages = channel_messages(sink, event_types, &mut messages);
        // A broker sink without a route destination publishes to `vod.{event_type}`
        // (vodbridge_core::default_destination); file and stdout have no address.
        let destination = match sink {
            SinkConfig::Kafka(_) | SinkConfig::Amqp(_) | SinkConfig::Nats(_)
                if destination.is_empty() =>
            {
                "vod.{event_type}".to_owned()
            }
            _ => destination.clone(),
        };
        let address = if destination.is_empty() {
            format!("(default destination of {sink_name})")
        } else {
            destination.clone()
        };
        let parameters = parameters(&destination);
        let mut channel = json!({
            "address": address,
            "description": format!("Events published by vodbridge to sink {sink_name} ({}).", sink.kind()),
            "messages": channel_messages,
        });
        if !parameters.is_empty() {
            channel["parameters"] = Value::Object(parameters);
        }
        if servers.contains_key(sink_name) {
            channel["servers"] = json!([{ "$ref": format!("#/servers/{sink_name}") }]);
        }
        let refs: Vec<Value> = channel["messages"]
            .as_object()
            .map(|m| {
                m.keys()
                    .map(|k| json!({ "$ref": format!("#/channels/{id}/messages/{k}") }))
                    .collect()
            })
            .unwrap_or_default();
        channel_docs.insert(id.clone(), channel);
        operations.insert(
            format!("publish-{id}"),
            json!({ "action": "send", "channel": { "$ref": format!("#/channels/{id}") }, "messages": refs }),
        );
    }

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "vodbridge events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Tencent Cloud VOD event notifications as CloudEvents 1.0 (binary mode: attributes in headers, body = the VOD event JSON). Delivery is at-least-once: drop duplicates by the id attribute."
        },
        "servers": servers,
        "channels": channel_docs,
        "operations": operations,
        "components": { "messages": messages }
    })
}

/// Which event types reach which (sink, destination): the routing table decides per type; the
/// targets of routes for unknown types are there with no type (a generic message).
fn routed_channels(settings: &Settings) -> BTreeMap<(String, String), BTreeSet<String>> {
    // Which event types reach which (sink, destination): the routing table decides per type.
    let mut channels: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut types: Vec<&str> = catalog::known_event_types().collect();
    types.sort_unstable();
    for event_type in &types {
        if let vodbridge_core::Resolution::Publish(_, targets) = settings.routes.resolve(event_type)
        {
            for Target {
                sink, destination, ..
            } in targets
            {
                channels
                    .entry((sink.clone(), destination.as_str().to_owned()))
                    .or_default()
                    .insert((*event_type).to_owned());
            }
        }
    }
    // Routes for unknown types publish arbitrary event types: list them as a generic message.
    for route in settings.routes.routes() {
        if let RouteAction::Publish(targets) = &route.action {
            for t in targets {
                channels
                    .entry((t.sink.clone(), t.destination.as_str().to_owned()))
                    .or_default();
            }
        }
    }
    channels
}

/// The messages of a channel of `sink` carrying `event_types` (a generic `AnyEvent` when none
/// is known), each added once to the document's `messages`.
fn channel_messages(
    sink: &SinkConfig,
    event_types: &BTreeSet<String>,
    messages: &mut Map<String, Value>,
) -> Map<String, Value> {
    let prefix = header_prefix(sink);
    let mut channel_messages = Map::new();
    for event_type in event_types {
        let message_id = format!("{}{event_type}", sink.kind());
        messages
            .entry(message_id.clone())
            .or_insert_with(|| message(event_type, prefix));
        channel_messages.insert(
            event_type.clone(),
            json!({ "$ref": format!("#/components/messages/{message_id}") }),
        );
    }
    if channel_messages.is_empty() {
        let message_id = format!("{}AnyEvent", sink.kind());
        let mut any = message("AnyEvent", prefix);
        any["payload"]["properties"]["EventType"] = json!({ "type": "string" });
        any["headers"]["properties"][format!("{prefix}type")] =
            json!({ "type": "string", "pattern": "^com\\.tencentcloud\\.vod\\." });
        any["headers"]["properties"][format!("{prefix}vodeventtype")] = json!({ "type": "string" });
        messages.entry(message_id.clone()).or_insert(any);
        channel_messages.insert(
            "AnyEvent".into(),
            json!({ "$ref": format!("#/components/messages/{message_id}") }),
        );
    }
    channel_messages
}

/// The address parameters a rendered `destination` template uses, described.
fn parameters(destination: &str) -> Map<String, Value> {
    let mut parameters = Map::new();
    for parameter in ["event_type", "source", "sub_app_id"] {
        if destination.contains(&format!("{{{parameter}}}")) {
            let description = match parameter {
                "event_type" => "The VOD EventType (characters outside A-Z a-z 0-9 _ - become _).",
                "source" => "The configured source name.",
                _ => "The source's VOD SubAppId (`unknown` when the source has none).",
            };
            parameters.insert(parameter.into(), json!({ "description": description }));
        }
    }
    parameters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_hosts_carry_no_scheme_credentials_or_path() {
        for (url, host) in [
            ("nats://bridge:hunter2@nats-1:4222", "nats-1:4222"),
            ("tls://nats:4222", "nats:4222"),
            ("amqp://u:***@rabbitmq:5672/%2f", "rabbitmq:5672"),
            ("nats-1:4222", "nats-1:4222"),
        ] {
            assert_eq!(host_of(url), host, "{url}");
        }
        let nats: vodbridge_nats::NatsSinkConfig = serde_json::from_str(
            r#"{"url":"nats://bridge:hunter2@nats-1:4222,nats://bridge:hunter2@nats-2:4222","stream":"VOD"}"#,
        )
        .expect("config");
        let server = server(&SinkConfig::Nats(nats)).expect("a server");
        assert_eq!(server["host"], "nats-1:4222");
        assert!(!server.to_string().contains("hunter2"));
    }
}
