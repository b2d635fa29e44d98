//! Per-request log lines from the Rust request path, in the Python logs' two formats (JSON
//! object per line, or `asctime LEVEL logger: message`) and levels (warning by default, -v info,
//! -vv debug). Python sets the level and format once at start; nothing per request crosses.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug = 10,
    Info = 20,
    Warning = 30,
    Error = 40,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
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

static LEVEL: AtomicU8 = AtomicU8::new(Level::Warning as u8);
static JSON: AtomicBool = AtomicBool::new(true);
const LOGGER: &str = "sluicegate.extproc";

/// Set once at start (the process's `-v` count and `--log-format`).
pub fn configure(level: Level, json: bool) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    JSON.store(json, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
}

/// One field of a line: text or a number.
pub enum Field<'a> {
    Str(&'a str),
    Int(i64),
}

/// Write one line to stderr when `level` is enabled; `fields` follow the message.
pub fn line(level: Level, msg: &str, fields: &[(&str, Field<'_>)]) {
    if !enabled(level) {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let text = if JSON.load(Ordering::Relaxed) {
        json_line(now.as_millis() as i64, level, msg, fields)
    } else {
        text_line(now.as_millis() as i64, level, msg, fields)
    };
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn json_line(ms: i64, level: Level, msg: &str, fields: &[(&str, Field<'_>)]) -> String {
    let mut map = serde_json::Map::with_capacity(4 + fields.len());
    map.insert("ts".into(), timestamp(ms, 'T', '.', "Z").into());
    map.insert("level".into(), level.name().into());
    map.insert("logger".into(), LOGGER.into());
    map.insert("msg".into(), msg.into());
    for (k, v) in fields {
        let v = match v {
            Field::Str(s) => serde_json::Value::from(*s),
            Field::Int(n) => serde_json::Value::from(*n),
        };
        map.insert((*k).to_owned(), v);
    }
    let mut out = serde_json::Value::Object(map).to_string();
    out.push('\n');
    out
}

fn text_line(ms: i64, level: Level, msg: &str, fields: &[(&str, Field<'_>)]) -> String {
    let mut out = format!(
        "{} {} {LOGGER}: {msg}",
        timestamp(ms, ' ', ',', ""),
        level.name().to_ascii_uppercase()
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

/// UTC `YYYY-MM-DD<sep>HH:MM:SS<frac>mmm<suffix>` from milliseconds since the epoch.
fn timestamp(ms: i64, sep: char, frac: char, suffix: &str) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    format!("{y:04}-{m:02}-{d:02}{sep}{h:02}:{min:02}:{s:02}{frac}{milli:03}{suffix}")
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

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        assert_eq!(timestamp(0, 'T', '.', "Z"), "1970-01-01T00:00:00.000Z");
        // 2026-12-04 22:33:29.123 UTC
        assert_eq!(
            timestamp(1_796_423_609_123, ' ', ',', ""),
            "2026-12-04 22:33:29,123"
        );
    }

    #[test]
    fn json_lines_carry_the_fields_after_the_message() {
        let line = json_line(
            0,
            Level::Warning,
            "answered",
            &[
                ("request_id", Field::Str("r1")),
                ("status", Field::Int(503)),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "warning");
        assert_eq!(v["logger"], LOGGER);
        assert_eq!(v["request_id"], "r1");
        assert_eq!(v["status"], 503);
    }
}
