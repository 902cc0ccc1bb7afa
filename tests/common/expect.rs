//! The Logstash event pystash should write for a record, built from what the Python client
//! computed (`tests/clients/expect.py`), and a field-by-field comparison that lists every
//! difference instead of stopping at the first.

use std::collections::HashMap;

use super::json::{json_eq, Json};

/// The proxy options that shape an event.
#[derive(Clone, Debug)]
pub struct Layout {
    /// `--logstash-version`: 1 or 0.
    pub version: u8,
    /// `--host-name`, or the machine's name.
    pub host: String,
    /// `--message-type`.
    pub kind: String,
    /// `--logstash-tags`.
    pub tags: Vec<String>,
}

impl Layout {
    pub fn v1(host: &str) -> Layout {
        Layout {
            version: 1,
            host: host.to_owned(),
            kind: "pystash".to_owned(),
            tags: Vec::new(),
        }
    }

    /// The field that holds the message, used to match events to records.
    pub fn message_key(&self) -> &'static str {
        if self.version == 0 {
            "@message"
        } else {
            "message"
        }
    }
}

/// The whole event for one record, keys in the order the contract gives.
pub fn event(rec: &Json, layout: &Layout) -> Json {
    let s = |k: &str| rec.at(k).clone();
    let mut tags: Vec<Json> = layout.tags.iter().map(|t| Json::str(t)).collect();
    tags.extend(rec.at("tags").as_array().iter().cloned());
    let tags = Json::Arr(tags);

    // levelname, logger, extras, then the exception and stack fields.
    let mut fields = vec![
        ("levelname".to_owned(), s("levelname")),
        ("logger".to_owned(), s("logger")),
    ];
    for pair in rec.at("extras").as_array() {
        let kv = pair.as_array();
        let key = kv[0].as_str().expect("extra name").to_owned();
        fields.push((key, kv[1].clone()));
    }
    if !rec.at("exc_text").is_null() {
        fields.push(("exc_info".to_owned(), s("exc_text")));
        fields.push(("filename".to_owned(), s("filename")));
        fields.push(("lineno".to_owned(), s("lineno")));
    }
    if !rec.at("stack_info").is_null() {
        fields.push(("stack_info".to_owned(), s("stack_info")));
    }

    let host = Json::str(&layout.host);
    let kind = Json::str(&layout.kind);
    if layout.version == 0 {
        let path = rec.at("path").as_str().expect("path");
        let source = format!("{}://{}/{}", layout.kind, layout.host, path);
        Json::Obj(vec![
            ("@timestamp".to_owned(), s("timestamp")),
            ("@message".to_owned(), s("message")),
            ("@source".to_owned(), Json::Str(source)),
            ("@source_host".to_owned(), host),
            ("@source_path".to_owned(), s("path")),
            ("@tags".to_owned(), tags),
            ("@type".to_owned(), kind),
            ("@fields".to_owned(), Json::Obj(fields)),
        ])
    } else {
        let mut top = vec![
            ("@timestamp".to_owned(), s("timestamp")),
            ("@version".to_owned(), Json::int(1)),
            ("message".to_owned(), s("message")),
            ("host".to_owned(), host),
            ("path".to_owned(), s("path")),
            ("tags".to_owned(), tags),
            ("type".to_owned(), kind),
        ];
        top.extend(fields);
        Json::Obj(top)
    }
}

/// Differences between an event and the expected one: key order, missing and unexpected keys,
/// then each value, recursing into nested objects so the path names the field.
pub fn compare(path: &str, got: &Json, want: &Json, out: &mut Vec<String>) {
    match (got, want) {
        (Json::Obj(g), Json::Obj(w)) => {
            let gk: Vec<&str> = g.iter().map(|(k, _)| k.as_str()).collect();
            let wk: Vec<&str> = w.iter().map(|(k, _)| k.as_str()).collect();
            if gk != wk {
                let missing: Vec<&str> = wk.iter().copied().filter(|k| !gk.contains(k)).collect();
                let extra: Vec<&str> = gk.iter().copied().filter(|k| !wk.contains(k)).collect();
                if missing.is_empty() && extra.is_empty() {
                    out.push(format!(
                        "{path}: key order\n      expected {wk:?}\n      got      {gk:?}"
                    ));
                } else {
                    out.push(format!(
                        "{path}: keys differ: missing {missing:?}, unexpected {extra:?}\n      expected {wk:?}\n      got      {gk:?}"
                    ));
                }
            }
            for (k, wv) in w {
                if let Some((_, gv)) = g.iter().find(|(gk, _)| gk == k) {
                    compare(&format!("{path}.{k}"), gv, wv, out);
                }
            }
        }
        _ => {
            if !json_eq(got, want) {
                out.push(format!(
                    "{path}:\n      expected {}\n      got      {}",
                    want.compact(400),
                    got.compact(400)
                ));
            }
        }
    }
}

/// Checks events against records: count, one event per message, the sent order when `ordered`,
/// and every field of every event. Returns the differences.
pub fn check_records(
    events: &[Json],
    records: &[Json],
    layout: &Layout,
    ordered: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let key = layout.message_key();
    if events.len() != records.len() {
        out.push(format!(
            "event count: expected {} (records sent), got {}",
            records.len(),
            events.len()
        ));
    }
    let mut by_message: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        match e.get(key).and_then(Json::as_str) {
            Some(m) => by_message.entry(m).or_default().push(i),
            None => out.push(format!(
                "event #{i} has no string {key:?}: {}",
                e.compact(300)
            )),
        }
    }
    let mut positions = Vec::new();
    for rec in records {
        let msg = rec.at("message").as_str().expect("message");
        let label = short(msg);
        match by_message.get(msg).map(Vec::as_slice) {
            None | Some([]) => out.push(format!("record {label:?}: no event")),
            Some(found) => {
                if found.len() > 1 {
                    out.push(format!("record {label:?}: {} events", found.len()));
                }
                positions.push(found[0]);
                compare(
                    &format!("[{label}]"),
                    &events[found[0]],
                    &event(rec, layout),
                    &mut out,
                );
            }
        }
    }
    if ordered && positions.windows(2).any(|w| w[0] > w[1]) {
        out.push(format!(
            "events are not in the order sent: positions of the records in Redis {positions:?}"
        ));
    }
    out
}

/// A message shortened for labels, control characters escaped.
pub fn short(msg: &str) -> String {
    let cut: String = msg.chars().take(40).collect();
    let more = if msg.chars().count() > 40 { "..." } else { "" };
    format!("{}{more}", cut.escape_debug())
}

/// Panics with every difference, one per line, when there are any.
pub fn assert_none(what: &str, failures: &[String]) {
    if !failures.is_empty() {
        let shown: Vec<&str> = failures.iter().take(80).map(String::as_str).collect();
        panic!(
            "{what}: {} difference(s)\n  - {}{}",
            failures.len(),
            shown.join("\n  - "),
            if failures.len() > 80 { "\n  ..." } else { "" }
        );
    }
}
