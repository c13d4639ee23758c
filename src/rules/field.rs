//! Field paths (`position.attributes.armed`, `device.name`, `batteryLevel`) compiled once into an enum,
//! and read from an event as a borrowed [`Val`] without allocating.

use serde_json::Value;

use crate::event::{Attributes, Envelope, KNOTS_TO_KMH};

/// A value read from an event, borrowed where it can be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    /// Missing or `null`.
    Null,
    /// Boolean.
    Bool(bool),
    /// Any number (ids, speeds, levels).
    Num(f64),
    /// Text.
    Str(&'a str),
    /// An array or object: exists, compares to nothing.
    Other,
}

impl<'a> Val<'a> {
    fn from_json(v: Option<&'a Value>) -> Val<'a> {
        match v {
            None | Some(Value::Null) => Val::Null,
            Some(Value::Bool(b)) => Val::Bool(*b),
            Some(Value::Number(n)) => n.as_f64().map_or(Val::Null, Val::Num),
            Some(Value::String(s)) => Val::Str(s),
            Some(_) => Val::Other,
        }
    }

    fn opt_str(s: Option<&'a String>) -> Val<'a> {
        s.map_or(Val::Null, |s| Val::Str(s))
    }

    /// The value as a number: numbers, and text that parses as one.
    pub fn as_num(&self) -> Option<f64> {
        match self {
            Val::Num(n) => Some(*n),
            Val::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// Which object of the envelope a path starts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Obj {
    /// `event.`
    Event,
    /// `device.`
    Device,
    /// `position.`
    Position,
    /// `geofence.`
    Geofence,
    /// `maintenance.`
    Maintenance,
}

/// A compiled field path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// A named property of an object (`device.name`).
    Prop(Obj, Prop),
    /// An attribute of an object (`position.attributes.armed`).
    Attr(Obj, String),
    /// A bare attribute name, looked up in event, then position, then device attributes.
    Bare(String),
    /// `speed_kmh`: position speed in km/h.
    SpeedKmh,
    /// `alarm`: the event's alarm value.
    Alarm,
    /// `source`: the name of the source that delivered the event.
    Source,
}

/// Named properties of Traccar's models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Prop {
    Id,
    Type,
    DeviceId,
    PositionId,
    GeofenceId,
    MaintenanceId,
    Name,
    UniqueId,
    Status,
    GroupId,
    Category,
    Model,
    Phone,
    Contact,
    Disabled,
    Latitude,
    Longitude,
    Altitude,
    Speed,
    SpeedKmh,
    Course,
    Accuracy,
    Valid,
    Address,
    Protocol,
    Description,
    Area,
}

/// Why a path is not a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown field `{path}`: {hint}")]
pub struct FieldError {
    /// The path as written.
    pub path: String,
    /// What would work.
    pub hint: String,
}

impl Field {
    /// Compiles a path as written in a rule or expression.
    pub fn parse(path: &str) -> Result<Field, FieldError> {
        let err = |hint: &str| FieldError {
            path: path.to_string(),
            hint: hint.to_string(),
        };
        let mut parts = path.splitn(2, '.');
        let head = parts.next().unwrap_or_default();
        let rest = parts.next();
        let obj = match head {
            "event" => Obj::Event,
            "device" => Obj::Device,
            "position" => Obj::Position,
            "geofence" => Obj::Geofence,
            "maintenance" => Obj::Maintenance,
            _ if rest.is_some() => {
                return Err(err(
                    "paths start with event., device., position., geofence. or maintenance.",
                ))
            }
            "speed_kmh" => return Ok(Field::SpeedKmh),
            "alarm" => return Ok(Field::Alarm),
            "source" => return Ok(Field::Source),
            "" => return Err(err("empty path")),
            name => return Ok(Field::Bare(name.to_string())),
        };
        let Some(rest) = rest else {
            return Err(err(
                "name a property, e.g. device.name or position.attributes.armed",
            ));
        };
        if let Some(key) = rest.strip_prefix("attributes.") {
            if key.is_empty() {
                return Err(err("name an attribute after `attributes.`"));
            }
            return Ok(Field::Attr(obj, key.to_string()));
        }
        use Prop::*;
        let prop = match (obj, rest) {
            (_, "id") => Id,
            (Obj::Event, "type") => Type,
            (Obj::Event | Obj::Position, "deviceId") => DeviceId,
            (Obj::Event | Obj::Device, "positionId") => PositionId,
            (Obj::Event, "geofenceId") => GeofenceId,
            (Obj::Event, "maintenanceId") => MaintenanceId,
            (Obj::Device | Obj::Geofence | Obj::Maintenance, "name") => Name,
            (Obj::Maintenance, "type") => Type,
            (Obj::Device, "uniqueId") => UniqueId,
            (Obj::Device, "status") => Status,
            (Obj::Device, "groupId") => GroupId,
            (Obj::Device, "category") => Category,
            (Obj::Device, "model") => Model,
            (Obj::Device, "phone") => Phone,
            (Obj::Device, "contact") => Contact,
            (Obj::Device, "disabled") => Disabled,
            (Obj::Position, "latitude") => Latitude,
            (Obj::Position, "longitude") => Longitude,
            (Obj::Position, "altitude") => Altitude,
            (Obj::Position, "speed") => Speed,
            (Obj::Position, "speed_kmh") => SpeedKmh,
            (Obj::Position, "course") => Course,
            (Obj::Position, "accuracy") => Accuracy,
            (Obj::Position, "valid") => Valid,
            (Obj::Position, "address") => Address,
            (Obj::Position, "protocol") => Protocol,
            (Obj::Geofence, "description") => Description,
            (Obj::Geofence, "area") => Area,
            _ => {
                return Err(err(&format!(
                    "{head} has no property `{rest}`; attributes are read with {head}.attributes.{rest}"
                )))
            }
        };
        Ok(Field::Prop(obj, prop))
    }

    /// Reads the field from an event.
    pub fn get<'a>(&self, env: &'a Envelope, source: &'a str) -> Val<'a> {
        match self {
            Field::Prop(obj, prop) => prop_of(env, *obj, *prop),
            Field::Attr(obj, key) => {
                Val::from_json(attributes_of(env, *obj).and_then(|a| a.get(key.as_str())))
            }
            Field::Bare(key) => {
                let key = key.as_str();
                let found = env
                    .event
                    .attributes
                    .get(key)
                    .or_else(|| env.position.as_ref()?.attributes.get(key))
                    .or_else(|| env.device.as_ref()?.attributes.get(key));
                Val::from_json(found)
            }
            Field::SpeedKmh => env.speed_kmh().map_or(Val::Null, Val::Num),
            Field::Alarm => Val::from_json(env.event.attributes.get("alarm")),
            Field::Source => Val::Str(source),
        }
    }
}

/// A field path with its slot in the per-event [`Scope`] (assigned when the rule set is built; fields
/// with the same path share a slot, so an event's `batteryLevel` is looked up once however many rules
/// test it).
#[derive(Debug, Clone, PartialEq)]
pub struct Slotted {
    /// The path.
    pub field: Field,
    /// Index in [`Scope`]; [`Slotted::NONE`] until the rule set assigns one.
    pub slot: usize,
}

impl Slotted {
    /// No slot: the field is read from the event every time.
    pub const NONE: usize = usize::MAX;

    /// A field without a slot yet.
    pub fn new(field: Field) -> Slotted {
        Slotted {
            field,
            slot: Slotted::NONE,
        }
    }
}

/// Gives each distinct field path a slot number.
#[derive(Debug, Default)]
pub struct Slots(std::collections::HashMap<Field, usize>);

impl Slots {
    /// Assigns `f` the slot of its path, a new one for a path not seen yet.
    pub fn assign(&mut self, f: &mut Slotted) {
        let n = self.0.len();
        f.slot = *self.0.entry(f.field.clone()).or_insert(n);
    }

    /// How many slots were handed out.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none were.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One evaluation's view of an event: the event, its source, and the values of the fields read so far
/// (each slotted field is read from the event at most once; nothing is copied).
#[derive(Debug)]
pub struct Scope<'a> {
    /// The event.
    pub env: &'a Envelope,
    /// The name of the source that delivered it.
    pub source: &'a str,
    slots: usize,
    vals: Vec<Option<Val<'a>>>,
    alarms: Option<Alarms<'a>>,
    /// Results of memoized conditions (see [`super::cond::Memos`]): 0 unknown, 1 false, 2 true.
    memos: Vec<u8>,
}

/// The event's alarms, split once per evaluation (up to four; more are split again when asked).
#[derive(Debug)]
struct Alarms<'a> {
    list: [&'a str; 4],
    len: usize,
    more: bool,
}

impl<'a> Scope<'a> {
    /// A scope with room for `slots` cached fields (allocated when the first one is read).
    pub fn new(env: &'a Envelope, source: &'a str, slots: usize) -> Scope<'a> {
        Scope {
            env,
            source,
            slots,
            vals: Vec::new(),
            alarms: None,
            memos: Vec::new(),
        }
    }

    /// Room for `n` memoized condition results (see [`super::cond::Memos`]).
    pub fn with_memos(mut self, n: usize) -> Scope<'a> {
        self.memos = vec![0; n];
        self
    }

    /// The remembered result of a memoized condition, if it was tested in this scope already.
    pub fn memo(&self, slot: u32) -> Option<bool> {
        match self.memos.get(slot as usize) {
            Some(1) => Some(false),
            Some(2) => Some(true),
            _ => None,
        }
    }

    /// Remembers a memoized condition's result (a condition without a slot is not remembered).
    pub fn remember(&mut self, slot: u32, result: bool) {
        if let Some(m) = self.memos.get_mut(slot as usize) {
            *m = 1 + result as u8;
        }
    }

    /// Whether one of the event's alarms ([`Envelope::alarms`]) is one of `names`.
    pub fn has_alarm(&mut self, names: &[String]) -> bool {
        let env = self.env;
        let a = self.alarms.get_or_insert_with(|| {
            let mut a = Alarms {
                list: [""; 4],
                len: 0,
                more: false,
            };
            for x in env.alarms() {
                if a.len < a.list.len() {
                    a.list[a.len] = x;
                    a.len += 1;
                } else {
                    a.more = true;
                }
            }
            a
        });
        if a.more {
            return env.alarms().any(|x| names.iter().any(|n| n == x));
        }
        a.list[..a.len].iter().any(|x| names.iter().any(|n| n == x))
    }

    /// The field's value, read from the event the first time its slot is asked for.
    #[inline]
    pub fn get(&mut self, f: &Slotted) -> Val<'a> {
        if f.slot >= self.slots {
            return f.field.get(self.env, self.source);
        }
        if self.vals.is_empty() {
            self.vals.resize(self.slots, None);
        }
        match self.vals[f.slot] {
            Some(v) => v,
            None => {
                let v = f.field.get(self.env, self.source);
                self.vals[f.slot] = Some(v);
                v
            }
        }
    }
}

fn attributes_of(env: &Envelope, obj: Obj) -> Option<&Attributes> {
    match obj {
        Obj::Event => Some(&env.event.attributes),
        Obj::Device => env.device.as_ref().map(|d| &d.attributes),
        Obj::Position => env.position.as_ref().map(|p| &p.attributes),
        Obj::Geofence => env.geofence.as_ref().map(|g| &g.attributes),
        Obj::Maintenance => env.maintenance.as_ref().map(|m| &m.attributes),
    }
}

fn num(n: i64) -> Val<'static> {
    Val::Num(n as f64)
}

fn prop_of(env: &Envelope, obj: Obj, prop: Prop) -> Val<'_> {
    use Prop::*;
    match obj {
        Obj::Event => {
            let e = &env.event;
            match prop {
                Id => num(e.id),
                Type => Val::Str(&e.event_type),
                DeviceId => num(e.device_id),
                PositionId => num(e.position_id),
                GeofenceId => num(e.geofence_id),
                MaintenanceId => num(e.maintenance_id),
                _ => Val::Null,
            }
        }
        Obj::Device => {
            let Some(d) = env.device.as_ref() else {
                return Val::Null;
            };
            match prop {
                Id => num(d.id),
                Name => Val::Str(&d.name),
                UniqueId => Val::Str(&d.unique_id),
                Status => Val::Str(&d.status),
                GroupId => num(d.group_id),
                PositionId => num(d.position_id),
                Category => Val::opt_str(d.category.as_ref()),
                Model => Val::opt_str(d.model.as_ref()),
                Phone => Val::opt_str(d.phone.as_ref()),
                Contact => Val::opt_str(d.contact.as_ref()),
                Disabled => Val::Bool(d.disabled),
                _ => Val::Null,
            }
        }
        Obj::Position => {
            let Some(p) = env.position.as_ref() else {
                return Val::Null;
            };
            match prop {
                Id => num(p.id),
                DeviceId => num(p.device_id),
                Latitude => Val::Num(p.latitude),
                Longitude => Val::Num(p.longitude),
                Altitude => Val::Num(p.altitude),
                Speed => Val::Num(p.speed),
                SpeedKmh => Val::Num(p.speed * KNOTS_TO_KMH),
                Course => Val::Num(p.course),
                Accuracy => Val::Num(p.accuracy),
                Valid => Val::Bool(p.valid),
                Address => Val::opt_str(p.address.as_ref()),
                Protocol => Val::opt_str(p.protocol.as_ref()),
                _ => Val::Null,
            }
        }
        Obj::Geofence => {
            let Some(g) = env.geofence.as_ref() else {
                return Val::Null;
            };
            match prop {
                Id => num(g.id),
                Name => Val::Str(&g.name),
                Description => Val::opt_str(g.description.as_ref()),
                Area => Val::opt_str(g.area.as_ref()),
                _ => Val::Null,
            }
        }
        Obj::Maintenance => {
            let Some(m) = env.maintenance.as_ref() else {
                return Val::Null;
            };
            match prop {
                Id => num(m.id),
                Name => Val::Str(&m.name),
                Type => Val::Str(&m.kind),
                _ => Val::Null,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope::from_json(
            br#"{"event":{"id":7,"type":"alarm","attributes":{"alarm":"vibration"}},
            "device":{"id":12,"name":"Lena","attributes":{"chat":"42","batteryLevel":5}},
            "position":{"speed":10.0,"attributes":{"armed":true,"batteryLevel":80}}}"#,
        )
        .unwrap()
    }

    #[test]
    fn paths_read_the_right_values() {
        let e = env();
        let get = |p: &str| Field::parse(p).unwrap().get(&e, "hook").as_num();
        assert_eq!(get("event.id"), Some(7.0));
        assert_eq!(get("device.id"), Some(12.0));
        assert_eq!(get("device.attributes.chat"), Some(42.0));
        // Bare names prefer the position over the device: the position is the newer reading.
        assert_eq!(get("batteryLevel"), Some(80.0));
        assert!((get("speed_kmh").unwrap() - 18.52).abs() < 1e-9);
        let armed = Field::parse("position.attributes.armed").unwrap();
        assert_eq!(armed.get(&e, ""), Val::Bool(true));
        assert_eq!(
            Field::parse("geofence.name").unwrap().get(&e, ""),
            Val::Null
        );
        assert_eq!(
            Field::parse("source").unwrap().get(&e, "hook"),
            Val::Str("hook")
        );
    }

    #[test]
    fn unknown_paths_are_errors_with_hints() {
        let e = Field::parse("device.colour").unwrap_err();
        assert!(e.hint.contains("device.attributes.colour"), "{e}");
        assert!(Field::parse("vehicle.speed").is_err());
        assert!(Field::parse("position.attributes.").is_err());
    }
}
