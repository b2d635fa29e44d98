//! Per-request log lines from the Rust request path, in the Python logs' two formats (JSON
//! object per line, or `asctime LEVEL logger: message`) and levels (warning by default, -v info,
//! -vv debug). Python sets the level and format once at start; nothing per request crosses.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug = 10,
    Info = 20,
    Warning = 30,
    Error = 40,
}

impl Level {
    /// zap's name (what the Python JSON and console formatters write).
    fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warn",
            Level::Error => "error",
        }
    }

    /// Python logging's name (the text format of the other commands).
    fn python_name(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
        }
    }

    /// Python's logging level numbers (10 debug … 40 error); anything else → warning.
    pub fn from_python(n: u8) -> Level {
        match n {
            0..=10 => Level::Debug,
            11..=20 => Level::Info,
            21..=30 => Level::Warning,
            _ => Level::Error,
        }
    }
}

/// How a line is laid out: zap's JSON object or console layout (what `sluicegate run` writes,
/// --zap-encoder), or the other commands' `asctime LEVEL logger: message` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoder {
    Json = 0,
    Console = 1,
    Text = 2,
}

impl Encoder {
    pub fn from_name(name: &str) -> Option<Encoder> {
        match name {
            "json" => Some(Encoder::Json),
            "console" => Some(Encoder::Console),
            "text" => Some(Encoder::Text),
            _ => None,
        }
    }
}

/// --zap-time-encoding: how `ts` is written (Iso8601 is the default: UTC, milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeEncoding {
    Iso8601 = 0,
    Epoch = 1,
    Millis = 2,
    Nano = 3,
    Rfc3339 = 4,
    Rfc3339Nano = 5,
}

/// Every time encoding by its flag value, in discriminant order.
const TIME_ENCODINGS: [(TimeEncoding, &str); 6] = [
    (TimeEncoding::Iso8601, "iso8601"),
    (TimeEncoding::Epoch, "epoch"),
    (TimeEncoding::Millis, "millis"),
    (TimeEncoding::Nano, "nano"),
    (TimeEncoding::Rfc3339, "rfc3339"),
    (TimeEncoding::Rfc3339Nano, "rfc3339nano"),
];

impl TimeEncoding {
    pub fn from_name(name: &str) -> Option<TimeEncoding> {
        TIME_ENCODINGS
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(t, _)| *t)
    }

    fn from_u8(n: u8) -> TimeEncoding {
        TIME_ENCODINGS
            .get(n as usize)
            .map_or(TimeEncoding::Iso8601, |(t, _)| *t)
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Warning as u8);
static ENCODER: AtomicU8 = AtomicU8::new(Encoder::Json as u8);
static TIME: AtomicU8 = AtomicU8::new(TimeEncoding::Iso8601 as u8);
const LOGGER: &str = "sluicegate.extproc";

/// Set once at start from the Python root logger (level, encoder, time encoding), so every
/// line of the process has one format.
pub fn configure(level: Level, encoder: Encoder, time: TimeEncoding) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    ENCODER.store(encoder as u8, Ordering::Relaxed);
    TIME.store(time as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
}

/// One field of a line: text or a number.
pub enum Field<'a> {
    Str(&'a str),
    Int(i64),
}

impl Field<'_> {
    fn json(&self) -> serde_json::Value {
        match self {
            Field::Str(s) => serde_json::Value::from(*s),
            Field::Int(n) => serde_json::Value::from(*n),
        }
    }
}

/// Write one line to stderr when `level` is enabled; `fields` follow the message.
pub fn line(level: Level, msg: &str, fields: &[(&str, Field<'_>)]) {
    if !enabled(level) {
        return;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i64;
    let time = TimeEncoding::from_u8(TIME.load(Ordering::Relaxed));
    let text = match ENCODER.load(Ordering::Relaxed) {
        0 => json_line(nanos, time, level, msg, fields),
        1 => console_line(nanos, time, level, msg, fields),
        _ => text_line(nanos, level, msg, fields),
    };
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn json_line(
    nanos: i64,
    time: TimeEncoding,
    level: Level,
    msg: &str,
    fields: &[(&str, Field<'_>)],
) -> String {
    let mut map = serde_json::Map::with_capacity(4 + fields.len());
    map.insert("ts".into(), ts(nanos, time));
    map.insert("level".into(), level.name().into());
    map.insert("logger".into(), LOGGER.into());
    map.insert("msg".into(), msg.into());
    for (k, v) in fields {
        map.insert((*k).to_owned(), v.json());
    }
    let mut out = serde_json::Value::Object(map).to_string();
    out.push('\n');
    out
}

/// zap's console layout as the Python ConsoleFormatter writes it: time, LEVEL, logger and
/// message tab-separated, then the other fields as one JSON object (Python's `json.dumps`
/// spacing, so Rust and Python lines read alike).
fn console_line(
    nanos: i64,
    time: TimeEncoding,
    level: Level,
    msg: &str,
    fields: &[(&str, Field<'_>)],
) -> String {
    let stamp = match ts(nanos, time) {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    let mut out = format!(
        "{stamp}\t{}\t{LOGGER}\t{msg}",
        level.name().to_ascii_uppercase()
    );
    for (i, (k, v)) in fields.iter().enumerate() {
        let key = serde_json::Value::from(*k);
        let _ = write!(
            out,
            "{}{key}: {}",
            if i == 0 { "\t{" } else { ", " },
            v.json()
        );
    }
    if !fields.is_empty() {
        out.push('}');
    }
    out.push('\n');
    out
}

fn text_line(nanos: i64, level: Level, msg: &str, fields: &[(&str, Field<'_>)]) -> String {
    let mut out = format!(
        "{} {} {LOGGER}: {msg}",
        timestamp(nanos, ' ', Some((',', 3)), ""),
        level.python_name()
    );
    for (k, v) in fields {
        let _ = match v {
            Field::Str(s) => write!(out, " {k}={s}"),
            Field::Int(n) => write!(out, " {k}={n}"),
        };
    }
    out.push('\n');
    out
}

/// `ts` as the Python JsonFormatter writes it for each --zap-time-encoding.
fn ts(nanos: i64, time: TimeEncoding) -> serde_json::Value {
    match time {
        TimeEncoding::Epoch => serde_json::Value::from(nanos as f64 / 1e9),
        TimeEncoding::Millis => serde_json::Value::from(nanos as f64 / 1e6),
        TimeEncoding::Nano => serde_json::Value::from(nanos),
        TimeEncoding::Rfc3339 => timestamp(nanos, 'T', None, "Z").into(),
        TimeEncoding::Rfc3339Nano => timestamp(nanos, 'T', Some(('.', 9)), "Z").into(),
        TimeEncoding::Iso8601 => timestamp(nanos, 'T', Some(('.', 3)), "Z").into(),
    }
}

/// UTC `YYYY-MM-DD<sep>HH:MM:SS[<mark><digits of the fraction>]<suffix>`, truncated.
fn timestamp(nanos: i64, sep: char, fraction: Option<(char, u32)>, suffix: &str) -> String {
    let (secs, sub) = (
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000),
    );
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s) = (rest / 3600, rest / 60 % 60, rest % 60);
    let mut out = format!("{y:04}-{m:02}-{d:02}{sep}{h:02}:{min:02}:{s:02}");
    if let Some((mark, digits)) = fraction {
        let value = sub / 10_i64.pow(9 - digits);
        let _ = write!(out, "{mark}{value:0width$}", width = digits as usize);
    }
    out.push_str(suffix);
    out
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-04 22:33:29.123456789 UTC
    const T: i64 = 1_796_423_609_123_456_789;
    const FIELDS: [(&str, Field<'static>); 2] = [
        ("request_id", Field::Str("r1")),
        ("status", Field::Int(503)),
    ];

    #[test]
    fn each_time_encoding_writes_ts_as_the_python_formatter_does() {
        let cases = [
            (
                TimeEncoding::Iso8601,
                serde_json::json!("2026-12-04T22:33:29.123Z"),
            ),
            (
                TimeEncoding::Rfc3339,
                serde_json::json!("2026-12-04T22:33:29Z"),
            ),
            (
                TimeEncoding::Rfc3339Nano,
                serde_json::json!("2026-12-04T22:33:29.123456789Z"),
            ),
            (TimeEncoding::Nano, serde_json::json!(T)),
            (TimeEncoding::Millis, serde_json::json!(T as f64 / 1e6)),
            (TimeEncoding::Epoch, serde_json::json!(T as f64 / 1e9)),
        ];
        for (encoding, expected) in cases {
            assert_eq!(ts(T, encoding), expected, "{encoding:?}");
        }
        assert_eq!(
            timestamp(0, 'T', Some(('.', 3)), "Z"),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn json_lines_carry_zap_level_names_and_the_fields_after_the_message() {
        let line = json_line(0, TimeEncoding::Nano, Level::Warning, "answered", &FIELDS);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["ts"], 0);
        assert_eq!(v["logger"], LOGGER);
        assert_eq!(v["request_id"], "r1");
        assert_eq!(v["status"], 503);
    }

    #[test]
    fn console_lines_are_tab_separated_with_the_fields_as_json() {
        let line = console_line(T, TimeEncoding::Rfc3339, Level::Debug, "routed", &FIELDS);
        assert_eq!(
            line,
            "2026-12-04T22:33:29Z\tDEBUG\tsluicegate.extproc\trouted\t{\"request_id\": \"r1\", \"status\": 503}\n"
        );
    }

    #[test]
    fn text_lines_follow_python_logging_basic_layout() {
        let line = text_line(
            T,
            Level::Warning,
            "stream failed",
            &[("code", Field::Int(1))],
        );
        assert_eq!(
            line,
            "2026-12-04 22:33:29,123 WARNING sluicegate.extproc: stream failed code=1\n"
        );
    }
}
