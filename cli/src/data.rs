//! The data commands (`measures`, `activity`, `workouts`, `sleep`, `heart`, `devices`,
//! `goals`): typed reads through `DataClient` over the same layer as `call`, every page, one
//! line per row as a table (tab-separated) or JSON lines.

use std::io::Write;

use futures_util::StreamExt;
use jiff::civil::Date;
use jiff::{Timestamp, ToSpan};
use serde_json::{Value, json};
use tower::Layer;
use tower_withings::data::{
    ActivityDay, DataClient, DataError, Exact, GetActivity, GetMeas, GetSleepSummary, GetWorkouts,
    HeartList, HeartRecord, Measure, MeasureGroup, MeasureType, Query, RowStream, SleepSummary,
    Workout,
};
use tower_withings::transport::{self, HttpClient};
use tower_withings::{Endpoints, UserId, WithingsAuth};

use super::{CliResult, Failure};

/// A DATE argument: `YYYY-MM-DD` (a UTC day) or Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum When {
    /// A calendar day, UTC.
    Day(Date),
    /// An instant.
    Unix(Timestamp),
}

impl std::str::FromStr for When {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let secs: i64 = s.parse().map_err(|_| format!("{s:?}: out of range"))?;
            return Timestamp::from_second(secs)
                .map(When::Unix)
                .map_err(|_| format!("{s:?}: out of range"));
        }
        s.parse::<Date>()
            .map(When::Day)
            .map_err(|_| format!("{s:?} is neither YYYY-MM-DD nor Unix seconds"))
    }
}

impl When {
    /// The first instant (a day's midnight UTC).
    fn start(self) -> Timestamp {
        match self {
            When::Unix(t) => t,
            When::Day(d) => d
                .to_zoned(jiff::tz::TimeZone::UTC)
                .map_or(Timestamp::UNIX_EPOCH, |z| z.timestamp()),
        }
    }

    /// The last instant (a day's last second, UTC).
    fn end(self) -> Timestamp {
        match self {
            When::Unix(t) => t,
            When::Day(d) => d
                .checked_add(1.day())
                .map_or(Timestamp::MAX, |next| When::Day(next).start())
                .checked_sub(1.second())
                .unwrap_or(Timestamp::MAX),
        }
    }

    /// The UTC day.
    fn date(self) -> Date {
        match self {
            When::Day(d) => d,
            When::Unix(t) => t.to_zoned(jiff::tz::TimeZone::UTC).date(),
        }
    }
}

/// How rows are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Tab-separated columns, one row a line.
    Table,
    /// One JSON object a line.
    Jsonl,
}

/// The arguments every data command takes.
#[derive(Debug, clap::Args)]
pub(crate) struct Select {
    /// The Withings user.
    #[arg(long)]
    user: UserId,
    /// Only what was created or changed since DATE (Withings' `lastupdate`): YYYY-MM-DD or
    /// Unix seconds. Without it or a window: the whole history.
    #[arg(long, value_name = "DATE", conflicts_with_all = ["from", "to"])]
    since: Option<When>,
    /// The window's first day or instant (with --to).
    #[arg(long, value_name = "DATE", requires = "to")]
    from: Option<When>,
    /// The window's last day or instant, included (with --from).
    #[arg(long, value_name = "DATE", requires = "from")]
    to: Option<When>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// The data commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum DataCommand {
    /// Measure groups (getmeas), every page: one line per measure. JSON lines carry grpid,
    /// date, created, modified (Unix s), attrib, category, type (the code), name, position
    /// (or null), value (the exact decimal, as a string) and unit.
    Measures {
        #[command(flatten)]
        select: Select,
        /// Comma-separated measure type codes or names (1 or weight, 6 or fat_ratio, …); one
        /// call for all of them. Default: every type.
        #[arg(long = "type", value_delimiter = ',', value_name = "CODE|NAME")]
        types: Vec<MeasureType>,
    },
    /// Activity days (getactivity): one line per day and source.
    Activity {
        #[command(flatten)]
        select: Select,
    },
    /// Workouts (getworkouts): one line per workout.
    Workouts {
        #[command(flatten)]
        select: Select,
    },
    /// Sleep summaries (sleep getsummary): one line per night or nap.
    Sleep {
        #[command(flatten)]
        select: Select,
    },
    /// ECG and blood pressure records (heart list): one line per record. Heart list has no
    /// `lastupdate`: --since DATE reads the window from DATE to now.
    Heart {
        #[command(flatten)]
        select: Select,
    },
    /// The user's devices (getdevice): one line per device.
    Devices {
        /// The Withings user.
        #[arg(long)]
        user: UserId,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// The user's goals (getgoals): one line, `none` (or null) when they set none.
    Goals {
        /// The Withings user.
        #[arg(long)]
        user: UserId,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

/// Seconds of an optional instant, for JSON (`null` when absent).
pub(crate) fn unix(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(t.as_second()))
}

/// A table cell: the text, or `-`.
fn cell<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// An exact value as a JSON string (`null` when absent).
fn exact(v: Option<Exact>) -> Value {
    v.map_or(Value::Null, |v| json!(v.to_string()))
}

/// A measure group's own fields as a JSON object (its measures apart).
pub(crate) fn group_json(g: &MeasureGroup) -> Value {
    json!({
        "grpid": g.grpid,
        "date": unix(g.date),
        "created": unix(g.created),
        "modified": unix(g.modified),
        "attrib": g.attrib.map(|a| a.code()),
        "category": g.category.map(|c| c.code()),
        "deviceid": g.source.deviceid,
    })
}

/// One measure as a JSON object: type (the code), name, position (or null), value (the
/// exact decimal, as a string), unit.
pub(crate) fn measure_json(m: &Measure) -> Value {
    json!({
        "type": m.measure_type.code(),
        "name": m.measure_type.name(),
        "position": m.position,
        "value": m.value.to_string(),
        "unit": m.measure_type.unit(),
    })
}

/// An activity day as a JSON object (the `activity --format jsonl` line, a synced record).
pub(crate) fn activity_json(day: &ActivityDay) -> Value {
    json!({
        "date": day.day.date.to_string(),
        "modified": unix(day.modified),
        "steps": day.steps,
        "distance": day.distance,
        "calories": day.calories,
        "totalcalories": day.totalcalories,
        "brand": day.source.brand,
        "is_tracker": day.source.is_tracker,
        "deviceid": day.source.deviceid,
    })
}

/// A workout as a JSON object.
pub(crate) fn workout_json(w: &Workout) -> Value {
    json!({
        "id": w.id,
        "category": w.category.map(|c| c.code()),
        "name": w.category.map(|c| c.name()),
        "start": unix(w.start),
        "end": unix(w.end),
        "date": w.day.as_ref().map(|d| d.date.to_string()),
        "modified": unix(w.modified),
        "calories": w.data.calories,
        "steps": w.data.steps,
        "distance": w.data.distance,
    })
}

/// A sleep summary as a JSON object.
pub(crate) fn sleep_json(n: &SleepSummary) -> Value {
    json!({
        "id": n.id,
        "date": n.day.as_ref().map(|d| d.date.to_string()),
        "start": unix(n.start),
        "end": unix(n.end),
        "created": unix(n.created),
        "modified": unix(n.modified),
        "deep": n.data.deepsleepduration,
        "light": n.data.lightsleepduration,
        "rem": n.data.remsleepduration,
        "awake": n.data.wakeupduration,
        "score": n.data.sleep_score,
    })
}

/// A heart record (ECG, blood pressure) as a JSON object.
pub(crate) fn heart_json(r: &HeartRecord) -> Value {
    let ecg = r.ecg.as_ref();
    let bp = r.blood_pressure.as_ref();
    json!({
        "signalid": ecg.and_then(|e| e.signalid),
        "afib": ecg.and_then(|e| e.afib).map(|a| a.code()),
        "timestamp": unix(r.timestamp),
        "modified": unix(r.modified),
        "heart_rate": r.heart_rate,
        "systole": bp.and_then(|b| b.systole),
        "diastole": bp.and_then(|b| b.diastole),
        "model": r.model.map(|m| m.code()),
        "deviceid": r.deviceid,
    })
}

/// Prints one row: JSON lines, or the table cells tab-separated.
fn print(out: &mut impl Write, format: Format, row: &Value, cells: &[String]) {
    let _ = match format {
        Format::Jsonl => writeln!(out, "{row}"),
        Format::Table => writeln!(out, "{}", cells.join("\t")),
    };
}

/// Runs a data command through `auth`'s layer.
pub(crate) async fn run(
    auth: &WithingsAuth,
    endpoints: &Endpoints,
    command: DataCommand,
) -> CliResult<()> {
    let stack = auth.layer().layer(transport::https_client());
    let data = DataClient::new(stack, endpoints);
    let mut out = std::io::stdout().lock();
    match command {
        DataCommand::Measures { select, types } => {
            let query = match window(&select) {
                Some((from, to)) => GetMeas::window(from.start(), to.end()),
                None => GetMeas::since(since(&select)),
            };
            let query = if types.is_empty() {
                query
            } else {
                query.types(&types)
            };
            let lines = |group: &MeasureGroup| {
                let line = |m: &Measure| {
                    let mut row = group_json(group);
                    if let (Value::Object(row), Value::Object(measure)) =
                        (&mut row, measure_json(m))
                    {
                        row.extend(measure);
                    }
                    let cells = vec![
                        cell(group.date),
                        group.grpid.to_string(),
                        m.measure_type.code().to_string(),
                        m.measure_type.name().to_owned(),
                        m.value.to_string(),
                        cell(m.measure_type.unit()),
                        cell(m.position),
                    ];
                    (row, cells)
                };
                group.measures.iter().map(line).collect()
            };
            print_rows(&data, &select, query, &mut out, lines).await?;
        }
        DataCommand::Activity { select } => {
            let query = by_days(&select, GetActivity::days, GetActivity::since);
            print_rows(&data, &select, query, &mut out, |day: &ActivityDay| {
                let cells = vec![
                    day.day.date.to_string(),
                    cell(day.steps),
                    cell(day.distance),
                    cell(day.calories),
                    cell(day.source.deviceid.as_deref()),
                ];
                vec![(activity_json(day), cells)]
            })
            .await?;
        }
        DataCommand::Workouts { select } => {
            let query = by_days(&select, GetWorkouts::days, GetWorkouts::since);
            print_rows(&data, &select, query, &mut out, |w: &Workout| {
                let cells = vec![
                    cell(w.start),
                    w.id.to_string(),
                    cell(w.category.map(|c| c.code())),
                    cell(w.category.map(|c| c.name())),
                    cell(w.end),
                    cell(w.data.calories),
                ];
                vec![(workout_json(w), cells)]
            })
            .await?;
        }
        DataCommand::Sleep { select } => {
            let query = by_days(&select, GetSleepSummary::days, GetSleepSummary::since);
            print_rows(&data, &select, query, &mut out, |n: &SleepSummary| {
                let cells = vec![
                    cell(n.day.as_ref().map(|d| d.date)),
                    n.id.to_string(),
                    cell(n.start),
                    cell(n.end),
                    cell(n.data.sleep_score),
                ];
                vec![(sleep_json(n), cells)]
            })
            .await?;
        }
        DataCommand::Heart { select } => {
            let (from, to) = match window(&select) {
                Some((from, to)) => (from.start(), to.end()),
                None => (since(&select), Timestamp::now()),
            };
            let query = HeartList::window(from, to);
            print_rows(&data, &select, query, &mut out, |r: &HeartRecord| {
                let ecg = r.ecg.as_ref();
                let bp = r.blood_pressure.as_ref();
                let cells = vec![
                    cell(r.timestamp),
                    cell(ecg.and_then(|e| e.signalid)),
                    cell(ecg.and_then(|e| e.afib).map(|a| a.name())),
                    cell(r.heart_rate),
                    cell(bp.and_then(|b| b.systole)),
                    cell(bp.and_then(|b| b.diastole)),
                ];
                vec![(heart_json(r), cells)]
            })
            .await?;
        }
        DataCommand::Devices { user, format } => {
            for d in data.devices(user).await.map_err(failure)? {
                let battery = d.battery.as_ref().map(|b| format!("{b:?}").to_lowercase());
                let row = json!({
                    "deviceid": d.deviceid,
                    "type": d.kind,
                    "model": d.model,
                    "model_id": d.model_id,
                    "battery": battery,
                    "first_session": unix(d.first_session),
                    "last_session": unix(d.last_session),
                });
                let cells = [
                    d.deviceid.clone(),
                    cell(d.kind.as_deref()),
                    cell(d.model.as_deref().filter(|m| !m.is_empty())),
                    cell(d.model_id),
                    cell(battery.as_deref()),
                ];
                print(&mut out, format, &row, &cells);
            }
        }
        DataCommand::Goals { user, format } => {
            let goals = data.goals(user).await.map_err(failure)?;
            match goals {
                None => print(&mut out, format, &Value::Null, &["none".to_owned()]),
                Some(g) => {
                    let row = json!({
                        "steps": g.steps,
                        "sleep": g.sleep,
                        "weight": exact(g.weight),
                    });
                    let cells = [
                        format!("steps {}", cell(g.steps)),
                        format!("sleep {}", cell(g.sleep)),
                        format!("weight {}", cell(g.weight)),
                    ];
                    print(&mut out, format, &row, &cells);
                }
            }
        }
    }
    Ok(())
}

/// The window, if one was given.
fn window(select: &Select) -> Option<(When, When)> {
    select.from.zip(select.to)
}

/// A request by the window's UTC days, else by `since`.
fn by_days<Q>(select: &Select, days: fn(Date, Date) -> Q, since_: fn(Timestamp) -> Q) -> Q {
    match window(select) {
        Some((from, to)) => days(from.date(), to.date()),
        None => since_(since(select)),
    }
}

/// One printed line: the JSON object and the table cells.
type Line = (Value, Vec<String>);

/// Prints the lines of every row of `query` (a malformed row is skipped, see [`next`]).
async fn print_rows<S: HttpClient, Q: Query>(
    data: &DataClient<S>,
    select: &Select,
    query: Q,
    out: &mut impl Write,
    lines: impl Fn(&Q::Row) -> Vec<Line>,
) -> CliResult<()> {
    let mut rows = data.rows(select.user, query);
    while let Some(row) = next(&mut rows).await? {
        for (json, cells) in lines(&row) {
            print(out, select.format, &json, &cells);
        }
    }
    Ok(())
}

/// The `lastupdate`: --since, else the beginning (the whole history).
fn since(select: &Select) -> Timestamp {
    select.since.map_or(Timestamp::UNIX_EPOCH, When::start)
}

/// The next row; a malformed row is reported on stderr and skipped, any other error ends.
async fn next<T>(rows: &mut RowStream<T>) -> CliResult<Option<T>> {
    loop {
        match rows.next().await {
            None => return Ok(None),
            Some(Ok(row)) => return Ok(Some(row)),
            Some(Err(DataError::Row(e))) => eprintln!("withings: skipped a row: {e}"),
            Some(Err(e)) => return Err(failure(e)),
        }
    }
}

/// A data error as the CLI's failure (its exit code from the crate's error, else 1).
fn failure(error: DataError) -> Failure {
    match error {
        DataError::Withings(e) => Failure::from(e),
        other => Failure {
            code: 1,
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_days_or_unix_seconds() {
        let day: When = "2026-01-05".parse().unwrap();
        assert_eq!(day.start().as_second(), 1_767_571_200);
        assert_eq!(day.end().as_second(), 1_767_571_200 + 86_399);
        let unix: When = "1767571200".parse().unwrap();
        assert_eq!(unix.start(), day.start());
        assert_eq!(unix.date(), day.date());
        assert!("yesterday".parse::<When>().is_err());
        assert!("99999999999999999999".parse::<When>().is_err());
    }
}
