//! Recorded traffic: a list of requests with their arrival times and lengths, replayed by
//! `simulate --trace` and `tune --trace` instead of the Poisson workload.
//!
//! # File formats (read with the `cli` feature)
//!
//! **CSV** with a header row. Three columns are read, found by name (case and the
//! characters `_`, `-` and space are ignored; other columns are skipped):
//!
//! | what | accepted names | value |
//! |---|---|---|
//! | arrival time | `arrival_s`, `timestamp` | seconds (a number), or a date and time `YYYY-MM-DD HH:MM:SS[.fraction][Z or ±HH:MM]` (`T` may separate date and time) |
//! | prompt tokens | `prompt_tokens`, `ContextTokens` | integer ≥ 0 |
//! | output tokens | `output_tokens`, `GeneratedTokens` | integer ≥ 0 |
//!
//! This is the layout of the public Azure LLM inference traces
//! (`TIMESTAMP,ContextTokens,GeneratedTokens`, e.g. `2023-11-16 18:15:46.6805900,374,44`),
//! so those files are read as they are.
//!
//! **JSONL**: one JSON object per line with the same names as keys (`{"arrival_s": 0.25,
//! "prompt_tokens": 512, "output_tokens": 128}`); blank lines are skipped. A file is read as
//! JSONL when its name ends in `.jsonl` or `.json`, else as CSV.
//!
//! Times are made relative to the earliest request (which arrives at 0 s) and requests are
//! sorted by arrival (stable, so equal times keep file order). Lengths of 0 become 1, and
//! every request is then clipped to the layout like a drawn one (see
//! [`super::config::Limits::clip`]).

use std::fmt;

/// One recorded request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceRequest {
    /// Arrival, seconds after the trace's first request.
    pub arrival_s: f64,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Output tokens to generate.
    pub output_tokens: u32,
}

/// A trace: requests sorted by arrival, the first at 0 s.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    name: String,
    requests: Vec<TraceRequest>,
}

/// Why a trace could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct TraceError {
    /// The file (or name) the trace came from.
    pub file: String,
    /// The line, when the problem is on one.
    pub line: Option<u64>,
    /// What is wrong.
    pub message: String,
}

impl Trace {
    /// A trace from requests in any order, with arrival times in seconds on any origin.
    ///
    /// # Errors
    ///
    /// No requests, or a time that is not a finite number.
    pub fn new(name: &str, mut requests: Vec<TraceRequest>) -> Result<Self, TraceError> {
        let err = |message: String| TraceError {
            file: name.to_owned(),
            line: None,
            message,
        };
        if let Some((i, r)) = requests
            .iter()
            .enumerate()
            .find(|(_, r)| !r.arrival_s.is_finite())
        {
            return Err(err(format!(
                "request {i} arrives at {}, not a finite time",
                r.arrival_s
            )));
        }
        let Some(t0) = requests.iter().map(|r| r.arrival_s).reduce(f64::min) else {
            return Err(err("the trace holds no requests".to_owned()));
        };
        requests.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
        for r in &mut requests {
            r.arrival_s -= t0;
            r.prompt_tokens = r.prompt_tokens.max(1);
            r.output_tokens = r.output_tokens.max(1);
        }
        Ok(Self {
            name: name.to_owned(),
            requests,
        })
    }

    /// Where the trace came from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The requests, by arrival.
    pub fn requests(&self) -> &[TraceRequest] {
        &self.requests
    }

    /// Seconds from the first arrival to the last.
    pub fn span_s(&self) -> f64 {
        self.requests.last().map_or(0.0, |r| r.arrival_s)
    }

    /// The first `⌈fraction · n⌉` requests and the rest (each rebased to start at 0 s), for
    /// tuning on one part and evaluating on the other. `None` when a part would be empty.
    pub fn split(&self, fraction: f64) -> Option<(Self, Self)> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return None;
        }
        let n = self.requests.len();
        let k = ((fraction * n as f64).ceil() as usize).clamp(1, n);
        let (a, b) = self.requests.split_at(k);
        let part = |reqs: &[TraceRequest], first: usize| {
            let name = format!(
                "{} [requests {}–{}]",
                self.name,
                first + 1,
                first + reqs.len()
            );
            Self::new(&name, reqs.to_vec()).ok()
        };
        Some((part(a, 0)?, part(b, k)?))
    }

    /// The same requests arriving `factor` times faster (`factor > 0`).
    pub fn speed_up(&self, factor: f64) -> Self {
        let mut t = self.clone();
        if factor.is_finite() && factor > 0.0 {
            for r in &mut t.requests {
                r.arrival_s /= factor;
            }
        }
        t
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trace {} ({} requests over {:.1} s)",
            self.name,
            self.requests.len(),
            self.span_s()
        )
    }
}

/// Seconds since 1970-01-01 00:00:00 UTC of a date and time
/// `YYYY-MM-DD[ T]HH:MM:SS[.fraction][Z|±HH:MM|±HHMM]`, as whole seconds and nanoseconds.
pub fn parse_datetime(s: &str) -> Option<(i64, u32)> {
    let s = s.trim();
    let (date, rest) = s.split_at_checked(10)?;
    let mut d = date.split('-');
    let (year, month, day) = (
        d.next()?.parse::<i64>().ok()?,
        d.next()?.parse::<u32>().ok()?,
        d.next()?.parse::<u32>().ok()?,
    );
    let rest = rest.strip_prefix([' ', 'T'])?;
    let (hms, rest) = rest.split_at_checked(8)?;
    let mut t = hms.split(':');
    let (h, m, sec) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || !(0..24).contains(&h)
        || !(0..60).contains(&m)
        || !(0..=60).contains(&sec)
    {
        return None;
    }
    // Fraction: any number of digits, nanosecond precision kept.
    let (nanos, zone) = match rest.strip_prefix('.') {
        Some(frac) => {
            let digits = frac
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(frac.len());
            let (ds, zone) = frac.split_at(digits);
            if ds.is_empty() {
                return None;
            }
            let mut n: u32 = 0;
            for (i, c) in ds.chars().take(9).enumerate() {
                n += c.to_digit(10)? * 10u32.pow(8 - i as u32);
            }
            (n, zone)
        }
        None => (0, rest),
    };
    let offset = match zone.trim() {
        "" | "Z" => 0,
        z => {
            let sign = match z.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let hhmm: String = z.get(1..)?.chars().filter(|&c| c != ':').collect();
            if hhmm.len() != 4 || !hhmm.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let (oh, om) = (
                hhmm.get(..2)?.parse::<i64>().ok()?,
                hhmm.get(2..)?.parse::<i64>().ok()?,
            );
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + h * 3600 + m * 60 + sec - offset, nanos))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A column name with case and `_`, `-`, space ignored.
fn canonical(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Which of the three columns a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Time,
    Prompt,
    Output,
}

fn column_of(name: &str) -> Option<Column> {
    match canonical(name).as_str() {
        "arrivals" | "timestamp" => Some(Column::Time),
        "prompttokens" | "contexttokens" => Some(Column::Prompt),
        "outputtokens" | "generatedtokens" => Some(Column::Output),
        _ => None,
    }
}

/// An arrival time as read: seconds, or a date and time (seconds and nanoseconds since
/// the epoch), made relative once every row is read.
#[derive(Debug, Clone, Copy)]
enum Time {
    Seconds(f64),
    Date(i64, u32),
}

fn parse_time(s: &str) -> Option<Time> {
    let s = s.trim();
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() => Some(Time::Seconds(x)),
        Ok(_) => None,
        Err(_) => parse_datetime(s).map(|(secs, nanos)| Time::Date(secs, nanos)),
    }
}

fn parse_tokens(s: &str) -> Option<u32> {
    let s = s.trim();
    s.parse::<u32>().ok().or_else(|| {
        // `12.0` as some exporters write integers.
        s.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0 && x.fract() == 0.0 && *x <= f64::from(u32::MAX))
            .map(|x| x as u32)
    })
}

/// Turns read rows into a trace: all times seconds, or all dates (mixing is refused).
fn assemble(name: &str, rows: Vec<(u64, Time, u32, u32)>) -> Result<Trace, TraceError> {
    let base = rows
        .iter()
        .filter_map(|&(_, t, _, _)| match t {
            Time::Date(s, _) => Some(s),
            Time::Seconds(_) => None,
        })
        .min();
    let mut requests = Vec::with_capacity(rows.len());
    let mut kind = None;
    for (line, t, prompt_tokens, output_tokens) in rows {
        let is_date = matches!(t, Time::Date(..));
        if *kind.get_or_insert(is_date) != is_date {
            return Err(TraceError {
                file: name.to_owned(),
                line: Some(line),
                message: "arrival times mix seconds and dates".to_owned(),
            });
        }
        let arrival_s = match t {
            Time::Seconds(x) => x,
            Time::Date(s, n) => (s - base.unwrap_or(s)) as f64 + f64::from(n) * 1e-9,
        };
        requests.push(TraceRequest {
            arrival_s,
            prompt_tokens,
            output_tokens,
        });
    }
    Trace::new(name, requests)
}

/// Reads a trace from CSV text (see the module docs); `name` names it in messages.
///
/// # Errors
///
/// A missing column, a value that is not a time or a token count (naming the line and
/// column), or no rows.
pub fn parse_csv(text: &str, name: &str) -> Result<Trace, TraceError> {
    let err = |line: Option<u64>, message: String| TraceError {
        file: name.to_owned(),
        line,
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| err(Some(1), e.to_string()))?
        .clone();
    let mut cols = [None; 3];
    for (i, h) in headers.iter().enumerate() {
        if let Some(c) = column_of(h)
            && let Some(slot) = cols.get_mut(c as usize)
        {
            slot.get_or_insert(i);
        }
    }
    let [Some(time), Some(prompt), Some(output)] = cols else {
        return Err(err(
            Some(1),
            format!(
                "the header `{}` lacks a column: need an arrival time (`arrival_s` or `TIMESTAMP`), prompt tokens (`prompt_tokens` or `ContextTokens`) and output tokens (`output_tokens` or `GeneratedTokens`)",
                headers.iter().collect::<Vec<_>>().join(",")
            ),
        ));
    };
    let mut rows = Vec::new();
    for record in reader.records() {
        let record =
            record.map_err(|e| err(e.position().map(csv::Position::line), e.to_string()))?;
        let line = record.position().map_or(0, csv::Position::line);
        let field = |i: usize, what: &str| {
            record
                .get(i)
                .ok_or_else(|| err(Some(line), format!("no {what} column (column {})", i + 1)))
        };
        let t = field(time, "arrival time")?;
        let t = parse_time(t).ok_or_else(|| {
            err(
                Some(line),
                format!(
                    "`{t}` is not an arrival time (seconds, or YYYY-MM-DD HH:MM:SS[.fraction])"
                ),
            )
        })?;
        let tokens = |i: usize, what: &str| {
            let v = field(i, what)?;
            parse_tokens(v).ok_or_else(|| {
                err(
                    Some(line),
                    format!(
                        "`{v}` is not a count of {what} (column `{}`)",
                        headers.get(i).unwrap_or("?")
                    ),
                )
            })
        };
        let p = tokens(prompt, "prompt tokens")?;
        let o = tokens(output, "output tokens")?;
        rows.push((line, t, p, o));
    }
    assemble(name, rows)
}

/// Reads a trace from JSONL text (see the module docs); `name` names it in messages.
///
/// # Errors
///
/// A line that is not a JSON object with the three keys, or no rows.
pub fn parse_jsonl(text: &str, name: &str) -> Result<Trace, TraceError> {
    use serde_json::Value;
    let mut rows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i as u64 + 1;
        let err = |message: String| TraceError {
            file: name.to_owned(),
            line: Some(line),
            message,
        };
        if raw.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(raw).map_err(|e| err(e.to_string()))?;
        let Value::Object(obj) = v else {
            return Err(err("expected a JSON object".to_owned()));
        };
        let mut cols: [Option<&Value>; 3] = [None; 3];
        for (k, v) in &obj {
            if let Some(c) = column_of(k)
                && let Some(slot) = cols.get_mut(c as usize)
            {
                slot.get_or_insert(v);
            }
        }
        let [Some(t), Some(p), Some(o)] = cols else {
            return Err(err(
                "need the keys `arrival_s` (or `timestamp`), `prompt_tokens` and `output_tokens`"
                    .to_owned(),
            ));
        };
        let text_of = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let time =
            parse_time(&text_of(t)).ok_or_else(|| err(format!("{t} is not an arrival time")))?;
        let count = |v: &Value, what: &str| {
            parse_tokens(&text_of(v)).ok_or_else(|| err(format!("{v} is not a count of {what}")))
        };
        rows.push((
            line,
            time,
            count(p, "prompt tokens")?,
            count(o, "output tokens")?,
        ));
    }
    assemble(name, rows)
}

/// Reads a trace file: JSONL when the name ends in `.jsonl` or `.json`, else CSV.
///
/// # Errors
///
/// The file cannot be read, or [`parse_csv`] / [`parse_jsonl`] refuse it.
pub fn read(path: &std::path::Path) -> Result<Trace, TraceError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| TraceError {
        file: name.clone(),
        line: None,
        message: format!("cannot read: {e}"),
    })?;
    let jsonl = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("json"));
    if jsonl {
        parse_jsonl(&text, &name)
    } else {
        parse_csv(&text, &name)
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        reason = "Test code: a panic is a failed test."
    )]

    use super::*;

    #[test]
    fn datetimes_are_read_to_the_nanosecond() {
        assert_eq!(parse_datetime("1970-01-01 00:00:00"), Some((0, 0)));
        assert_eq!(
            parse_datetime("2023-11-16 18:15:46.6805900"),
            Some((1_700_158_546, 680_590_000))
        );
        assert_eq!(
            parse_datetime("2024-05-10T00:00:01.5+02:00"),
            Some((1_715_292_001, 500_000_000))
        );
        assert_eq!(
            parse_datetime("2024-02-29 12:00:00Z"),
            Some((1_709_208_000, 0))
        );
        for bad in [
            "2023-02-29 00:00:00",
            "2023-13-01 00:00:00",
            "2023-11-16 24:00:00",
            "2023-11-16",
            "2023-11-16 18:15:46.",
            "2023-11-16 18:15:46+2",
            "yesterday",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
    }

    #[test]
    fn azure_columns_are_read_and_times_made_relative() {
        let csv = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
                   2023-11-16 18:15:47.0000000,100,0\n\
                   2023-11-16 18:15:46.5000000,374,44\n";
        let t = parse_csv(csv, "a.csv").unwrap();
        assert_eq!(
            t.requests(),
            [
                TraceRequest {
                    arrival_s: 0.0,
                    prompt_tokens: 374,
                    output_tokens: 44
                },
                TraceRequest {
                    arrival_s: 0.5,
                    prompt_tokens: 100,
                    output_tokens: 1
                },
            ]
        );
    }

    #[test]
    fn our_columns_in_any_order_and_jsonl() {
        let csv = "output_tokens, note ,prompt_tokens,arrival_s\n3,x,10,2.5\n4,y,20,0.5\n";
        let t = parse_csv(csv, "o.csv").unwrap();
        assert_eq!(t.requests()[0].prompt_tokens, 20);
        assert_eq!(t.requests()[1].arrival_s, 2.0);
        let jsonl = "{\"arrival_s\": 1.0, \"prompt_tokens\": 7, \"output_tokens\": 2}\n\n\
                     {\"TIMESTAMP\": 0, \"ContextTokens\": 9, \"GeneratedTokens\": 3}\n";
        let t = parse_jsonl(jsonl, "o.jsonl").unwrap();
        assert_eq!(t.requests()[0].prompt_tokens, 9);
        assert_eq!(t.span_s(), 1.0);
    }

    #[test]
    fn bad_files_name_the_line_and_the_value() {
        let e = parse_csv("time,prompt,output\n1,2,3\n", "x.csv").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("x.csv:1: the header `time,prompt,output` lacks a column"),
            "{e}"
        );
        let e = parse_csv(
            "arrival_s,prompt_tokens,output_tokens\n0,5,5\n1,five,5\n",
            "x.csv",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.csv:3: `five` is not a count of prompt tokens (column `prompt_tokens`)"
        );
        let e = parse_csv("arrival_s,prompt_tokens,output_tokens\n", "x.csv").unwrap_err();
        assert_eq!(e.to_string(), "x.csv: the trace holds no requests");
        let e = parse_csv(
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1,1\n3.5,1,1\n",
            "x.csv",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.csv:3: arrival times mix seconds and dates"
        );
        let e = parse_jsonl("{\"arrival_s\": 1}\n", "x.jsonl").unwrap_err();
        assert!(e.to_string().starts_with("x.jsonl:1: need the keys"), "{e}");
        let e = parse_jsonl("[1, 2]\n", "x.jsonl").unwrap_err();
        assert_eq!(e.to_string(), "x.jsonl:1: expected a JSON object");
    }

    #[test]
    fn split_and_speed_up() {
        let reqs = (0..5)
            .map(|i| TraceRequest {
                arrival_s: f64::from(i) * 2.0 + 10.0,
                prompt_tokens: 1,
                output_tokens: 1,
            })
            .collect();
        let t = Trace::new("t", reqs).unwrap();
        let (a, b) = t.split(0.5).unwrap();
        assert_eq!((a.requests().len(), b.requests().len()), (3, 2));
        assert_eq!(b.requests()[0].arrival_s, 0.0);
        assert_eq!(b.span_s(), 2.0);
        assert_eq!(a.name(), "t [requests 1–3]");
        assert_eq!(
            b.to_string(),
            "trace t [requests 4–5] (2 requests over 2.0 s)"
        );
        assert!(t.split(1.0).is_none());
        assert!(t.split(0.0).is_none());
        assert_eq!(t.speed_up(4.0).span_s(), 2.0);
    }
}
