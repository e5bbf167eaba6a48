//! Foreshock's native scanner: native JSON telemetry straight to window
//! tallies, without a Python object per event.
//!
//! The window step hands over a batch of Kafka messages and the state of its
//! window store. The scanner takes messages in order, as long as it can
//! place them exactly as the Python path would place them one event at a
//! time, and adds each event to the tally of its (first window, last
//! window, layer, service, kind). It stops before the first message it
//! cannot take so: one the schema refuses or leaves to the model (a dead
//! letter, an unusual form), a tombstone or an oversized message, one with
//! an event late for its window, out of bounds for clock skew, of a kind
//! without rules (metric samples), or one that would close a window. The
//! Python path takes that message, and the scanner goes on after it.
//!
//! What a kind adds to its tally (counters, flags, measurements, versions)
//! comes from the same rules the Python path follows (`foreshock.measure`),
//! and the schema from the pydantic models (`foreshock.native`), so that no
//! field or rule is written here.

mod parse;
mod route;
mod schema;
mod time;

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use serde::Deserialize;
use serde_json::Value;

use parse::{Checked, Parsed};
use schema::{FieldSpec, KindSpec, Scalar, Schema};

#[derive(Deserialize)]
struct Description {
    event: Value,
    kinds: Vec<KindDescription>,
}

#[derive(Deserialize)]
struct KindDescription {
    name: String,
    fields: Value,
    rules: RulesDescription,
}

#[derive(Deserialize)]
struct RulesDescription {
    total: String,
    flags: Vec<FlagDescription>,
    measures: Vec<(String, String)>,
    by_version: Option<String>,
}

#[derive(Deserialize)]
struct FlagDescription {
    counter: String,
    tests: Vec<(String, String, Value)>,
}

#[derive(Clone, Copy)]
enum Op {
    AtLeast,
    MoreThan,
    Is,
}

struct Flag {
    counter: String,
    // (field index, test, the value tested against)
    tests: Vec<(usize, Op, Value)>,
}

impl Flag {
    /// Any of the tests; a missing field (null) meets none.
    fn meets(&self, fields: &[Scalar<'_>]) -> bool {
        self.tests
            .iter()
            .any(|(at, op, target)| match (op, &fields[*at]) {
                (Op::Is, Scalar::Bool(b)) => target.as_bool() == Some(*b),
                (Op::Is, _) => false,
                (Op::AtLeast, value) => value
                    .number()
                    .zip(target.as_f64())
                    .is_some_and(|(v, t)| v >= t),
                (Op::MoreThan, value) => value
                    .number()
                    .zip(target.as_f64())
                    .is_some_and(|(v, t)| v > t),
            })
    }
}

struct Rules {
    total: String,
    flags: Vec<Flag>,
    // (name in the aggregate, field index)
    measures: Vec<(String, usize)>,
    by_version: Option<usize>,
}

impl Rules {
    fn new(spec: &KindSpec, description: RulesDescription) -> Result<Self, String> {
        let field = |name: &str| {
            spec.index(name)
                .ok_or_else(|| format!("rules of {:?} read an unknown field {name:?}", spec.name))
        };
        let mut flags = Vec::new();
        for flag in description.flags {
            let mut tests = Vec::new();
            for (name, op, value) in flag.tests {
                let op = match op.as_str() {
                    ">=" => Op::AtLeast,
                    ">" => Op::MoreThan,
                    "is" => Op::Is,
                    other => return Err(format!("unknown test {other:?} on {name:?}")),
                };
                tests.push((field(&name)?, op, value));
            }
            flags.push(Flag {
                counter: flag.counter,
                tests,
            });
        }
        let mut measures = Vec::new();
        for (name, source) in description.measures {
            measures.push((name, field(&source)?));
        }
        let by_version = description.by_version.as_deref().map(field).transpose()?;
        Ok(Self {
            total: description.total,
            flags,
            measures,
            by_version,
        })
    }
}

#[derive(Hash, PartialEq, Eq, Clone)]
struct GroupKey {
    first: i64,
    last: i64,
    layer: String,
    service: String,
    kind: usize,
}

/// What the events of one (windows, layer, service, kind) added up to.
struct Group {
    key: GroupKey,
    events: u64,
    flagged: Vec<u64>,
    values: Vec<Vec<f64>>,
    rejected: Vec<u64>,
    // In the order the versions first came.
    versions: Vec<(String, u64)>,
}

impl Group {
    fn new(key: GroupKey, rules: &Rules) -> Self {
        Self {
            key,
            events: 0,
            flagged: vec![0; rules.flags.len()],
            values: vec![Vec::new(); rules.measures.len()],
            rejected: vec![0; rules.measures.len()],
            versions: Vec::new(),
        }
    }

    fn add(&mut self, rules: &Rules, fields: &[Scalar<'_>]) {
        self.events += 1;
        for (count, flag) in self.flagged.iter_mut().zip(&rules.flags) {
            *count += u64::from(flag.meets(fields));
        }
        for (i, (_, at)) in rules.measures.iter().enumerate() {
            match fields[*at].number() {
                Some(v) if (0.0..f64::INFINITY).contains(&v) => self.values[i].push(v),
                Some(_) => self.rejected[i] += 1,
                None => {}
            }
        }
        if let Some(at) = rules.by_version {
            let version = match &fields[at] {
                Scalar::Str(text) => text.as_ref(),
                _ => "",
            };
            match self.versions.iter_mut().find(|(v, _)| v == version) {
                Some((_, n)) => *n += 1,
                None => self.versions.push((version.to_owned(), 1)),
            }
        }
    }

    /// (first window, last window, layer, service, kind, events, counts,
    /// values, rejected, versions), as `foreshock.native` reads it.
    fn to_python<'py>(
        &self,
        py: Python<'py>,
        rules: &Rules,
        kind: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let counts = PyDict::new(py);
        counts.set_item(&rules.total, self.events)?;
        for (flag, n) in rules.flags.iter().zip(&self.flagged) {
            if *n > 0 {
                counts.set_item(&flag.counter, n)?;
            }
        }
        let values = PyDict::new(py);
        let rejected = PyDict::new(py);
        for (i, (name, _)) in rules.measures.iter().enumerate() {
            if !self.values[i].is_empty() {
                values.set_item(name, PyList::new(py, &self.values[i])?)?;
            }
            if self.rejected[i] > 0 {
                rejected.set_item(name, self.rejected[i])?;
            }
        }
        let versions = PyDict::new(py);
        for (version, n) in &self.versions {
            versions.set_item(version, n)?;
        }
        let key = &self.key;
        let item = (
            key.first,
            key.last,
            key.layer.as_str(),
            key.service.as_str(),
            kind,
            self.events,
            counts,
            values,
            rejected,
            versions,
        );
        Ok(item.into_pyobject(py)?.into_any())
    }
}

/// Windows of `length_us`, one starting every `slide_us`, from `align_us`.
#[derive(Clone, Copy)]
struct Windows {
    align_us: i64,
    slide_us: i64,
    length_us: i64,
}

impl Windows {
    /// The index of the first window that holds `t_us`.
    fn first(self, t_us: i64) -> i64 {
        (t_us - self.align_us - self.length_us).div_euclid(self.slide_us) + 1
    }

    /// The index of the last window that holds `t_us`.
    fn last(self, t_us: i64) -> i64 {
        (t_us - self.align_us).div_euclid(self.slide_us)
    }
}

/// The state of a window store that decides whether a message can be taken.
struct Watermark {
    first: i64,
    closed_any: bool,
    max_us: i64,
    close_at_us: i64,
}

/// How far an event time may lead or trail its message's receive time.
struct Skew {
    ahead_us: Option<i64>,
    behind_us: Option<i64>,
}

impl Skew {
    fn holds(&self, received_ms: Option<i64>, earliest: i64, latest: i64) -> bool {
        let Some(received_ms) = received_ms else {
            return true;
        };
        // In 128 bits: a producer may stamp any 64-bit time, and no sum
        // here may wrap.
        let received_us = i128::from(received_ms) * 1000;
        self.ahead_us
            .is_none_or(|a| i128::from(latest) - received_us <= i128::from(a))
            && self
                .behind_us
                .is_none_or(|b| received_us - i128::from(earliest) <= i128::from(b))
    }
}

/// What `Scanner::scan` returns: (the index of the first message not taken,
/// events taken, the first window to close, the latest event time, the
/// latest receive time of a message taken, the tallies).
type Scan<'py> = (usize, u64, i64, i64, Option<i64>, Bound<'py, PyList>);

#[pyclass(frozen)]
struct Scanner {
    schema: Schema,
    rules: Vec<Rules>,
    windows: Windows,
}

#[pymethods]
impl Scanner {
    /// A scanner for the schema and rules `description` gives (JSON), and
    /// windows of `length_us`, one starting every `slide_us`, from `align_us`.
    #[new]
    fn new(description: &str, align_us: i64, slide_us: i64, length_us: i64) -> PyResult<Self> {
        let description: Description =
            serde_json::from_str(description).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let mut kinds = Vec::new();
        let mut rules = Vec::new();
        for kind in description.kinds {
            let fields = FieldSpec::parse_all(kind.fields).map_err(PyValueError::new_err)?;
            let spec = KindSpec {
                name: kind.name,
                fields,
            };
            rules.push(Rules::new(&spec, kind.rules).map_err(PyValueError::new_err)?);
            kinds.push(spec);
        }
        let envelope = FieldSpec::parse_all(description.event).map_err(PyValueError::new_err)?;
        let schema = Schema::new(envelope, kinds).map_err(PyValueError::new_err)?;
        if slide_us <= 0 || length_us < slide_us {
            return Err(PyValueError::new_err("windows need 0 < slide <= length"));
        }
        Ok(Self {
            schema,
            rules,
            windows: Windows {
                align_us,
                slide_us,
                length_us,
            },
        })
    }

    /// Take messages from `start` on, in order, while each can be placed as
    /// the Python path would place it (see `Scan`).
    #[pyo3(signature = (
        values, timestamps, start, first, closed_any, max_us, close_at_us,
        ahead_us, behind_us, max_bytes
    ))]
    #[allow(clippy::too_many_arguments)]
    fn scan<'py>(
        &self,
        py: Python<'py>,
        values: &Bound<'py, PyList>,
        timestamps: &Bound<'py, PyList>,
        start: usize,
        first: i64,
        closed_any: bool,
        max_us: i64,
        close_at_us: i64,
        ahead_us: Option<i64>,
        behind_us: Option<i64>,
        max_bytes: Option<usize>,
    ) -> PyResult<Scan<'py>> {
        let mut state = Watermark {
            first,
            closed_any,
            max_us,
            close_at_us,
        };
        let skew = Skew {
            ahead_us,
            behind_us,
        };
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<GroupKey, usize> = HashMap::new();
        let mut events = 0u64;
        let mut received: Option<i64> = None;
        let mut at = start;
        while at < values.len() {
            let value = values.get_item(at)?;
            if value.is_none() {
                break;
            }
            let data = value.downcast::<PyBytes>()?.as_bytes();
            if max_bytes.is_some_and(|m| data.len() > m) {
                break;
            }
            let stamp: Option<i64> = timestamps.get_item(at)?.extract()?;
            let Some(parsed) = parse::message(&self.schema, data) else {
                break;
            };
            if !self.placeable(&parsed.events, &mut state, &skew, stamp) {
                break;
            }
            self.add(&parsed, &mut groups, &mut index);
            events += parsed.events.len() as u64;
            if let Some(stamp) = stamp {
                received = Some(received.map_or(stamp, |r| r.max(stamp)));
            }
            at += 1;
        }
        let tallies = PyList::empty(py);
        for group in &groups {
            let kind = &self.schema.kinds[group.key.kind].name;
            tallies.append(group.to_python(py, &self.rules[group.key.kind], kind)?)?;
        }
        Ok((at, events, state.first, state.max_us, received, tallies))
    }
}

impl Scanner {
    /// Whether the message's events can be placed without one being late,
    /// skewed, or closing a window; if so, the state as they leave it.
    fn placeable(
        &self,
        checked: &[Checked<'_>],
        state: &mut Watermark,
        skew: &Skew,
        received_ms: Option<i64>,
    ) -> bool {
        let earliest = checked.iter().map(|e| e.t_us).min().unwrap_or(i64::MAX);
        let latest = checked.iter().map(|e| e.t_us).max().unwrap_or(i64::MIN);
        if !skew.holds(received_ms, earliest, latest) || latest >= state.close_at_us {
            return false;
        }
        let low = self.windows.first(earliest);
        if low < state.first {
            if state.closed_any {
                return false;
            }
            // Before any window has closed, an earlier event only moves the
            // first window back.
            state.first = low;
        }
        state.max_us = state.max_us.max(latest);
        true
    }

    fn add(
        &self,
        parsed: &Parsed<'_>,
        groups: &mut Vec<Group>,
        index: &mut HashMap<GroupKey, usize>,
    ) {
        let mut current: Option<usize> = None;
        for event in &parsed.events {
            let first = self.windows.first(event.t_us);
            let last = self.windows.last(event.t_us);
            // Events of one message mostly share their group: compared with
            // the one before, before any lookup.
            let same = current.is_some_and(|g| {
                let key = &groups[g].key;
                key.first == first
                    && key.last == last
                    && key.kind == event.kind
                    && key.service == event.service
                    && key.layer == event.layer
            });
            if !same {
                let key = GroupKey {
                    first,
                    last,
                    layer: event.layer.clone().into_owned(),
                    service: event.service.clone().into_owned(),
                    kind: event.kind,
                };
                let found = *index.entry(key.clone()).or_insert_with(|| {
                    groups.push(Group::new(key, &self.rules[event.kind]));
                    groups.len() - 1
                });
                current = Some(found);
            }
            let g = current.expect("set above");
            let fields = parsed.fields_of(event, self.schema.kinds[event.kind].fields.len());
            groups[g].add(&self.rules[event.kind], fields);
        }
    }
}

/// The hash Bytewax routes the state key `key` by (see `route`).
#[pyfunction]
fn route_hash(key: &str) -> u64 {
    route::route_hash(key)
}

/// A state key made from `name` that Bytewax keeps on worker
/// `residue % workers` whenever `workers` divides `modulus` (see `route`).
#[pyfunction]
fn key_routed_to(name: &str, residue: u64, modulus: u64) -> PyResult<String> {
    if modulus == 0 {
        return Err(PyValueError::new_err("modulus must be positive"));
    }
    Ok(route::key_routed_to(name, residue, modulus))
}

#[pymodule]
fn foreshock_native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Scanner>()?;
    module.add_function(wrap_pyfunction!(route_hash, module)?)?;
    module.add_function(wrap_pyfunction!(key_routed_to, module)?)?;
    Ok(())
}
