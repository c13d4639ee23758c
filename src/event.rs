//! Traccar's event models (`event`, `position`, `device`, `geofence`, `maintenance`) as the webhook and the
//! WebSocket deliver them, tolerant of every Traccar version in the reference: `eventTime` or the older
//! `serverTime`, dates with `+00:00` or `+0000`, nulls anywhere, unknown keys ignored.

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Free attribute map of a Traccar model (`number | bool | string`, but anything JSON is kept).
pub type Attributes = Map<String, Value>;

/// One knot in km/h: Traccar reports every speed in knots.
pub const KNOTS_TO_KMH: f64 = 1.852;

/// The body of one Traccar event-forward / BikeTrax webhook call.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Envelope {
    /// The event itself.
    pub event: Event,
    /// The position the event refers to; missing for status events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    /// The device; always sent by Traccar, tolerated missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
    /// The geofence when `event.geofenceId != 0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geofence: Option<Geofence>,
    /// The maintenance entry when `event.maintenanceId != 0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
    /// The device's group: never sent by Traccar, filled in by enrichment (the live source's cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Group>,
}

/// A Traccar event.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Traccar's event id: the idempotency key of the event.
    pub id: i64,
    /// Event type (`alarm`, `geofenceEnter`, …). Unknown types are normal events.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Device the event belongs to.
    #[serde(default, deserialize_with = "null_default")]
    pub device_id: i64,
    /// Time of the event (`eventTime`; `serverTime` before Traccar 4.13).
    #[serde(default, alias = "serverTime", deserialize_with = "de_time")]
    pub event_time: Option<DateTime<Utc>>,
    /// Position the event was raised for (0 = none).
    #[serde(default, deserialize_with = "null_default")]
    pub position_id: i64,
    /// Geofence of a geofence event (0 = none).
    #[serde(default, deserialize_with = "null_default")]
    pub geofence_id: i64,
    /// Maintenance of a maintenance event (0 = none).
    #[serde(default, deserialize_with = "null_default")]
    pub maintenance_id: i64,
    /// Type-specific attributes (`alarm`, `speed`, `speedLimit`, `message`, …).
    #[serde(default, deserialize_with = "null_default")]
    pub attributes: Attributes,
}

/// A Traccar device.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// Device id.
    #[serde(default, deserialize_with = "null_default")]
    pub id: i64,
    /// Display name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// The tracker's own identifier (IMEI or similar).
    #[serde(default, deserialize_with = "null_default")]
    pub unique_id: String,
    /// `online`, `offline` or `unknown`.
    #[serde(default, deserialize_with = "null_default")]
    pub status: String,
    /// Group id (0 = none).
    #[serde(default, deserialize_with = "null_default")]
    pub group_id: i64,
    /// Calendar id (0 = none).
    #[serde(default, deserialize_with = "null_default")]
    pub calendar_id: i64,
    /// Last time the device reported.
    #[serde(default, deserialize_with = "de_time")]
    pub last_update: Option<DateTime<Utc>>,
    /// Latest position id.
    #[serde(default, deserialize_with = "null_default")]
    pub position_id: i64,
    /// Phone number of the SIM.
    #[serde(default)]
    pub phone: Option<String>,
    /// Model name.
    #[serde(default)]
    pub model: Option<String>,
    /// Contact (owner) text.
    #[serde(default)]
    pub contact: Option<String>,
    /// Category (`bicycle`, `car`, …).
    #[serde(default)]
    pub category: Option<String>,
    /// Disabled in Traccar.
    #[serde(default, deserialize_with = "null_default")]
    pub disabled: bool,
    /// Device attributes (e.g. a Telegram chat id set by the fleet operator).
    #[serde(default, deserialize_with = "null_default")]
    pub attributes: Attributes,
}

/// A Traccar position.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Position {
    /// Position id.
    #[serde(default, deserialize_with = "null_default")]
    pub id: i64,
    /// Device id.
    #[serde(default, deserialize_with = "null_default")]
    pub device_id: i64,
    /// Tracker protocol (`h02`, `osmand`, …).
    #[serde(default)]
    pub protocol: Option<String>,
    /// Time the server received it.
    #[serde(default, deserialize_with = "de_time")]
    pub server_time: Option<DateTime<Utc>>,
    /// Time the device reported.
    #[serde(default, deserialize_with = "de_time")]
    pub device_time: Option<DateTime<Utc>>,
    /// Time of the GNSS fix.
    #[serde(default, deserialize_with = "de_time")]
    pub fix_time: Option<DateTime<Utc>>,
    /// Whether the fix is valid.
    #[serde(default, deserialize_with = "null_default")]
    pub valid: bool,
    /// Latitude in degrees.
    #[serde(default, deserialize_with = "null_default")]
    pub latitude: f64,
    /// Longitude in degrees.
    #[serde(default, deserialize_with = "null_default")]
    pub longitude: f64,
    /// Altitude in metres.
    #[serde(default, deserialize_with = "null_default")]
    pub altitude: f64,
    /// Speed in knots.
    #[serde(default, deserialize_with = "null_default")]
    pub speed: f64,
    /// Course in degrees.
    #[serde(default, deserialize_with = "null_default")]
    pub course: f64,
    /// Reverse-geocoded address, if the server has one.
    #[serde(default)]
    pub address: Option<String>,
    /// Accuracy in metres.
    #[serde(default, deserialize_with = "null_default")]
    pub accuracy: f64,
    /// Geofences the position is inside (null when none).
    #[serde(default)]
    pub geofence_ids: Option<Vec<i64>>,
    /// Position attributes (`batteryLevel`, `armed`, `ignition`, `alarm`, …).
    #[serde(default, deserialize_with = "null_default")]
    pub attributes: Attributes,
}

/// A Traccar geofence.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Geofence {
    /// Geofence id.
    #[serde(default, deserialize_with = "null_default")]
    pub id: i64,
    /// Display name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Free description.
    #[serde(default)]
    pub description: Option<String>,
    /// WKT area, latitude first.
    #[serde(default)]
    pub area: Option<String>,
    /// Calendar id.
    #[serde(default, deserialize_with = "null_default")]
    pub calendar_id: i64,
    /// Geofence attributes (`speedLimit`, `polylineDistance`, `color`, …).
    #[serde(default, deserialize_with = "null_default")]
    pub attributes: Attributes,
}

/// A Traccar group of devices (`GET /api/groups`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// Group id.
    #[serde(default, deserialize_with = "null_default")]
    pub id: i64,
    /// Display name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Parent group (0 = none).
    #[serde(default, deserialize_with = "null_default")]
    pub group_id: i64,
    /// Group attributes.
    #[serde(default, deserialize_with = "null_default")]
    pub attributes: Attributes,
}

/// A Traccar maintenance entry.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Maintenance {
    /// Maintenance id.
    #[serde(default, deserialize_with = "null_default")]
    pub id: i64,
    /// Display name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Tracked key (`odometer`, `hours`, …).
    #[serde(default, rename = "type", deserialize_with = "null_default")]
    pub kind: String,
    /// Start value.
    #[serde(default, deserialize_with = "null_default")]
    pub start: f64,
    /// Period.
    #[serde(default, deserialize_with = "null_default")]
    pub period: f64,
    /// Attributes.
    #[serde(default, deserialize_with = "null_default")]
    pub attributes: Attributes,
}

/// The body of one call of Traccar's position forwarding (`forward.type=json`): its `PositionData`,
/// `{"position": {...}, "device": {...}}`, null members left out.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ForwardedPosition {
    /// The position; always sent by Traccar, checked by the intake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    /// The device as Traccar's cache knows it; left out when the cache has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
}

impl ForwardedPosition {
    /// Decodes a position-forwarding body. The error names the JSON path and position of the first
    /// problem.
    pub fn from_json(body: &[u8]) -> Result<ForwardedPosition, DecodeError> {
        decode(body)
    }
}

/// Decodes a body; the error names the JSON path and position of the first problem.
fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    // The plain decoder first: tracking the path costs a third of the decoding time, and only a body
    // that fails needs it, so that one is decoded a second time for the message.
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        DecodeError {
            path: if path == "." { String::new() } else { path },
            line: inner.line(),
            column: inner.column(),
            message: inner.to_string(),
        }
    })
}

impl Envelope {
    /// Decodes a webhook body. The error names the JSON path and position of the first problem.
    pub fn from_json(body: &[u8]) -> Result<Envelope, DecodeError> {
        decode(body)
    }

    /// The alarm value(s) of an `alarm` event (`event.attributes.alarm`, comma-separated lists split).
    pub fn alarms(&self) -> impl Iterator<Item = &str> {
        self.event
            .attributes
            .get("alarm")
            .and_then(Value::as_str)
            .into_iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// Whether the event refers to a position (`positionId` set) that the envelope does not carry: a
    /// live-source event whose position could not be had. Rules on `position.*` cannot hold for it.
    pub fn lacks_position(&self) -> bool {
        self.event.position_id != 0 && self.position.is_none()
    }

    /// The device id, from the device object or else the event.
    pub fn device_id(&self) -> i64 {
        self.device
            .as_ref()
            .map(|d| d.id)
            .filter(|id| *id != 0)
            .unwrap_or(self.event.device_id)
    }

    /// Speed of the position in km/h, if there is a position.
    pub fn speed_kmh(&self) -> Option<f64> {
        self.position.as_ref().map(|p| p.speed * KNOTS_TO_KMH)
    }

    /// When the event happened, by its own account: `eventTime`, else the time of its position's fix.
    pub fn own_time(&self) -> Option<DateTime<Utc>> {
        self.event
            .event_time
            .or_else(|| self.position.as_ref().and_then(|p| p.fix_time))
    }

    /// The position's coordinates when they can be put on a map; else why not.
    pub fn map_point(&self) -> Option<Result<(f64, f64), BadCoordinates>> {
        self.position.as_ref().map(Position::map_point)
    }
}

impl Position {
    /// The coordinates when they are a place on Earth that a tracker can report; else why not. Checked
    /// before a map pin or link is made: Telegram refuses a pin outside ±90/±180 with a 400, which
    /// would dead-letter it.
    pub fn map_point(&self) -> Result<(f64, f64), BadCoordinates> {
        let (latitude, longitude) = (self.latitude, self.longitude);
        if !latitude.is_finite() || !longitude.is_finite() {
            return Err(BadCoordinates::NotFinite);
        }
        if latitude.abs() > 90.0 || longitude.abs() > 180.0 {
            return Err(BadCoordinates::OutOfRange {
                latitude,
                longitude,
            });
        }
        // Exactly 0,0 is what trackers report when they have no fix (Traccar's `filter.zero` drops such
        // positions for that reason); no tracked bike is at "Null Island" in the Gulf of Guinea, and a
        // pin there would send someone looking in the wrong place.
        if latitude == 0.0 && longitude == 0.0 {
            return Err(BadCoordinates::NoFix);
        }
        Ok((latitude, longitude))
    }
}

/// Why a position cannot be put on a map.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum BadCoordinates {
    /// Latitude or longitude is not a finite number.
    #[error("the coordinates are not finite numbers")]
    NotFinite,
    /// Latitude beyond ±90 or longitude beyond ±180.
    #[error("impossible coordinates (latitude {latitude}, longitude {longitude}; latitude must be within ±90, longitude within ±180)")]
    OutOfRange {
        /// Latitude as reported.
        latitude: f64,
        /// Longitude as reported.
        longitude: f64,
    },
    /// 0,0: the tracker had no fix.
    #[error("coordinates 0,0 (the tracker had no fix)")]
    NoFix,
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("at `{path}`: ") })]
pub struct DecodeError {
    /// JSON path of the problem (`event.id`), empty at the top level.
    pub path: String,
    /// Line in the body (1-based).
    pub line: usize,
    /// Column in the body (1-based).
    pub column: usize,
    /// serde's description.
    pub message: String,
}

/// `null` (or a missing key, with `#[serde(default)]`) becomes the type's default.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Parses Traccar's dates: `2026-05-14T06:14:01.000+00:00`, the pre-4.11 `+0000`, and `Z`.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::<FixedOffset>::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn de_time<'de, D>(d: D) -> Result<Option<DateTime<Utc>>, D::Error>
where
    D: Deserializer<'de>,
{
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => parse_time(&s)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid date `{s}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_every_traccar_format() {
        let a = parse_time("2026-05-14T06:14:01.000+00:00").unwrap();
        let b = parse_time("2026-05-14T06:14:01.000+0000").unwrap();
        let c = parse_time("2026-05-14T08:14:01+02:00").unwrap();
        let d = parse_time("2026-05-14T06:14:01Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a, d);
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn legacy_server_time_and_nulls() {
        let body = br#"{"event":{"id":1,"type":"deviceOnline","serverTime":"2021-01-01T00:00:00.000+0000",
            "attributes":null,"geofenceId":null},"device":{"id":1,"name":null,"geofenceIds":[],"x":1},
            "users":[{"id":1}]}"#;
        let e = Envelope::from_json(body).unwrap();
        assert_eq!(e.event.event_type, "deviceOnline");
        assert_eq!(e.event.geofence_id, 0);
        assert_eq!(e.event.event_time, parse_time("2021-01-01T00:00:00Z"));
        assert_eq!(e.device.unwrap().name, "");
        assert!(e.position.is_none());
    }

    #[test]
    fn errors_name_the_path() {
        let err = Envelope::from_json(br#"{"event":{"id":"x","type":"alarm"}}"#).unwrap_err();
        assert_eq!(err.path, "event.id");
        assert!(err.to_string().contains("invalid type"), "{err}");
        let err = Envelope::from_json(br#"{"event":{"id":1}}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `type`"), "{err}");
        let err = Envelope::from_json(b"").unwrap_err();
        assert!(err.to_string().contains("EOF"), "{err}");
    }

    #[test]
    fn alarm_lists_are_split() {
        let e = Envelope::from_json(
            br#"{"event":{"id":1,"type":"alarm","attributes":{"alarm":"sos, vibration"}}}"#,
        )
        .unwrap();
        assert_eq!(e.alarms().collect::<Vec<_>>(), ["sos", "vibration"]);
    }
}
