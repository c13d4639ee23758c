//! Geofences the relay evaluates itself: Traccar's WKT (latitude first), containment computed exactly as
//! Traccar computes it, [`ZoneIndex`] (an R-tree of the zones' bounding boxes) and [`ZoneTracker`], a
//! pure state machine that turns a stream of positions into enter/exit crossings with an optional
//! dwell time.
//!
//! Containment follows Traccar's `org.traccar.geofence` classes:
//! - `CIRCLE (lat lon, r)`: haversine distance to the centre (R = 6378137 m) `<= r`;
//! - `POLYGON ((lat lon, ...))`: planar ray casting on degrees, the ray running along the latitude axis,
//!   with Traccar's edge rule (`<` on one end, `>=` on the other) and its antimeridian normalisation;
//! - `LINESTRING (lat lon, ...)`: distance to any segment `<= distance` (Traccar's `polylineDistance`,
//!   default 25 m: the corridor is twice that wide), the segment distance by Traccar's Heron formula.

use std::time::Duration;

mod index;
mod tracker;

pub use index::ZoneIndex;
pub use tracker::{Crossing, ZoneTracker};

/// Traccar's earth radius (equatorial, metres) for haversine distances.
pub const EARTH_RADIUS_M: f64 = 6_378_137.0;
/// Traccar's default `polylineDistance` (metres) when a line geofence does not set one.
pub const DEFAULT_LINE_DISTANCE_M: f64 = 25.0;

/// A geofence shape, coordinates in degrees.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Centre and radius in metres.
    Circle {
        /// Centre latitude.
        lat: f64,
        /// Centre longitude.
        lon: f64,
        /// Radius in metres.
        radius: f64,
    },
    /// One ring of `(lat, lon)` corners.
    Polygon(Polygon),
    /// A line of `(lat, lon)` points and the largest distance from it (metres) that counts as inside.
    Line {
        /// The points.
        points: Vec<(f64, f64)>,
        /// Largest distance from a segment.
        distance: f64,
    },
}

/// A polygon with Traccar's precomputed edge coefficients.
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon {
    corners: Vec<(f64, f64)>,
    constant: Vec<f64>,
    multiple: Vec<f64>,
    /// Corners on both sides of the antimeridian: longitudes below -90 are shifted by 360.
    normalize: bool,
}

/// Why a WKT area could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct WktError(pub String);

impl Polygon {
    fn new(corners: Vec<(f64, f64)>) -> Polygon {
        let normalize = corners.iter().any(|c| c.1 > 90.0) && corners.iter().any(|c| c.1 < -90.0);
        let norm = |lon: f64| {
            if normalize && lon < -90.0 {
                lon + 360.0
            } else {
                lon
            }
        };
        let n = corners.len();
        let (mut constant, mut multiple) = (vec![0.0; n], vec![0.0; n]);
        let mut j = n.wrapping_sub(1);
        for i in 0..n {
            let (lat_i, lon_i) = (corners[i].0, norm(corners[i].1));
            let (lat_j, lon_j) = (corners[j].0, norm(corners[j].1));
            if lon_j == lon_i {
                constant[i] = lat_i;
            } else {
                constant[i] =
                    lat_i - (lon_i * lat_j) / (lon_j - lon_i) + (lon_i * lat_i) / (lon_j - lon_i);
                multiple[i] = (lat_j - lat_i) / (lon_j - lon_i);
            }
            j = i;
        }
        Polygon {
            corners,
            constant,
            multiple,
            normalize,
        }
    }

    fn norm(&self, lon: f64) -> f64 {
        if self.normalize && lon < -90.0 {
            lon + 360.0
        } else {
            lon
        }
    }

    fn contains(&self, lat: f64, lon: f64) -> bool {
        let lon = self.norm(lon);
        let n = self.corners.len();
        let mut odd = false;
        let mut j = n.wrapping_sub(1);
        for i in 0..n {
            let (li, lj) = (self.norm(self.corners[i].1), self.norm(self.corners[j].1));
            if (li < lon && lj >= lon) || (lj < lon && li >= lon) {
                odd ^= lon * self.multiple[i] + self.constant[i] < lat;
            }
            j = i;
        }
        odd
    }
}

/// Haversine distance in metres, as Traccar's `DistanceCalculator.distance`.
pub fn distance(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (dlat, dlon) = ((lat2 - lat1).to_radians(), (lon2 - lon1).to_radians());
    let a = (dlat / 2.0).sin().powi(2)
        + lat1.to_radians().cos() * lat2.to_radians().cos() * (dlon / 2.0).sin().powi(2);
    let c = 2.0 * a.sqrt().atan2((1.0 - a).sqrt());
    EARTH_RADIUS_M * c
}

/// Initial great-circle bearing from the first point to the second, in degrees clockwise from north
/// (0 to 360); 0 when the points coincide.
pub fn bearing(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2, dlon) = (
        lat1.to_radians(),
        lat2.to_radians(),
        (lon2 - lon1).to_radians(),
    );
    let y = dlon.sin() * p2.cos();
    let x = p1.cos() * p2.sin() - p1.sin() * p2.cos() * dlon.cos();
    y.atan2(x).to_degrees().rem_euclid(360.0)
}

/// Distance in metres from a point to the segment `(lat1, lon1)-(lat2, lon2)`, as Traccar's
/// `DistanceCalculator.distanceToLine` (Heron's formula on haversine sides). One deliberate difference:
/// a point on the line, where rounding can make Heron's radicand slightly negative, is at 0 m, not NaN
/// (Traccar would call such a point outside).
pub fn distance_to_segment(lat: f64, lon: f64, lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let d0 = distance(lat, lon, lat1, lon1);
    let d1 = distance(lat1, lon1, lat2, lon2);
    let d2 = distance(lat2, lon2, lat, lon);
    if d0 * d0 > d1 * d1 + d2 * d2 {
        return d2;
    }
    if d2 * d2 > d1 * d1 + d0 * d0 {
        return d0;
    }
    if d1 == 0.0 {
        return d0;
    }
    let p = (d0 + d1 + d2) * 0.5;
    let area = (p * (p - d0) * (p - d1) * (p - d2)).max(0.0).sqrt();
    2.0 * area / d1
}

impl Shape {
    /// Parses Traccar's WKT (`CIRCLE`, `POLYGON`, `LINESTRING`), latitude first. `line_distance` is the
    /// corridor half-width of a `LINESTRING` (Traccar's `polylineDistance`), ignored for other shapes.
    pub fn parse(wkt: &str, line_distance: Option<f64>) -> Result<Shape, WktError> {
        let err = |m: String| WktError(m);
        let wkt = wkt.trim();
        let (kind, rest) = wkt
            .split_once('(')
            .ok_or_else(|| err(format!("`{}`: expected `KIND (...)`", short(wkt))))?;
        let body = rest
            .trim_end()
            .strip_suffix(')')
            .ok_or_else(|| err(format!("`{}`: missing `)`", short(wkt))))?;
        match kind.trim().to_ascii_uppercase().as_str() {
            "CIRCLE" => {
                let (centre, radius) = body.split_once(',').ok_or_else(|| {
                    err("CIRCLE: expected `CIRCLE (lat lon, radius)`".to_string())
                })?;
                let (lat, lon) = point(centre)?;
                let radius = number(radius)?;
                if radius <= 0.0 {
                    return Err(err(format!("CIRCLE: radius {radius} must be positive")));
                }
                Ok(Shape::Circle { lat, lon, radius })
            }
            "POLYGON" => {
                let ring = body
                    .trim()
                    .strip_prefix('(')
                    .and_then(|b| b.trim_end().strip_suffix(')'))
                    .ok_or_else(|| err("POLYGON: expected `POLYGON ((lat lon, ...))`".into()))?;
                if ring.contains('(') {
                    return Err(err("POLYGON: only one ring is supported (no holes)".into()));
                }
                let corners = points(ring)?;
                if corners.len() < 3 {
                    return Err(err("POLYGON: needs at least 3 corners".into()));
                }
                Ok(Shape::Polygon(Polygon::new(corners)))
            }
            "LINESTRING" => {
                let points = points(body)?;
                if points.len() < 2 {
                    return Err(err("LINESTRING: needs at least 2 points".into()));
                }
                let distance = line_distance
                    .filter(|d| *d > 0.0)
                    .unwrap_or(DEFAULT_LINE_DISTANCE_M);
                Ok(Shape::Line { points, distance })
            }
            other => Err(err(format!(
                "unknown geofence kind `{other}` (expected CIRCLE, POLYGON or LINESTRING)"
            ))),
        }
    }

    /// Whether `(lat, lon)` is inside, exactly as Traccar decides.
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        match self {
            Shape::Circle {
                lat: clat,
                lon: clon,
                radius,
            } => distance(*clat, *clon, lat, lon) <= *radius,
            Shape::Polygon(p) => p.contains(lat, lon),
            Shape::Line { points, distance } => points.windows(2).any(|w| {
                distance_to_segment(lat, lon, w[0].0, w[0].1, w[1].0, w[1].1) <= *distance
            }),
        }
    }
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

fn number(s: &str) -> Result<f64, WktError> {
    let s = s.trim();
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| WktError(format!("`{s}` is not a number")))
}

fn point(s: &str) -> Result<(f64, f64), WktError> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [lat, lon] = parts[..] else {
        return Err(WktError(format!(
            "`{}`: expected `latitude longitude`",
            s.trim()
        )));
    };
    let (lat, lon) = (number(lat)?, number(lon)?);
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(WktError(format!(
            "`{} {}`: out of range (WKT in Traccar is latitude first)",
            lat, lon
        )));
    }
    Ok((lat, lon))
}

fn points(s: &str) -> Result<Vec<(f64, f64)>, WktError> {
    s.split(',').map(point).collect()
}

/// A zone the relay tracks: a relay-defined one (id 0) or a Traccar geofence (its id).
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    /// Traccar geofence id, 0 for zones defined in the relay's configuration.
    pub id: i64,
    /// Display name (unique among the relay's zones).
    pub name: String,
    /// The WKT it was parsed from (shown to templates as `geofence.area`).
    pub area: String,
    /// Its shape.
    pub shape: Shape,
    /// How long a device must stay inside before the enter counts.
    pub dwell: Duration,
}

impl Zone {
    /// The key that identifies this zone across restarts and refreshes.
    pub fn key(&self) -> String {
        if self.id != 0 {
            format!("geofence:{}", self.id)
        } else {
            format!("zone:{}", self.name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(name: &str) -> serde_json::Value {
        let p = format!("{}/tests/payloads/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    /// The geofence of an example payload, parsed as Traccar would (with its `polylineDistance`).
    fn geofence_of(v: &serde_json::Value) -> Shape {
        let g = &v["geofence"];
        Shape::parse(
            g["area"].as_str().unwrap(),
            g["attributes"]["polylineDistance"].as_f64(),
        )
        .unwrap()
    }

    #[test]
    fn payload_positions_agree_with_traccar() {
        // geofenceEnter: the position is inside polygon 17 (Traccar listed it in geofenceIds).
        let enter = payload("geofenceEnter.json");
        let (lat, lon) = (
            enter["position"]["latitude"].as_f64().unwrap(),
            enter["position"]["longitude"].as_f64().unwrap(),
        );
        assert!(geofence_of(&enter).contains(lat, lon));
        // geofenceExit: the position has left circle 9 (geofenceIds null).
        let exit = payload("geofenceExit.json");
        let circle = geofence_of(&exit);
        let p = &exit["position"];
        assert!(!circle.contains(
            p["latitude"].as_f64().unwrap(),
            p["longitude"].as_f64().unwrap()
        ));
        // ... and the centre of the circle is inside.
        assert!(circle.contains(47.26221, 11.41352));
        // deviceOverspeed: the position is on line 41 (geofenceIds [41]) with polylineDistance 20.
        let over = payload("deviceOverspeed.json");
        let line = geofence_of(&over);
        assert!(matches!(line, Shape::Line { distance, .. } if distance == 20.0));
        let p = &over["position"];
        assert!(line.contains(
            p["latitude"].as_f64().unwrap(),
            p["longitude"].as_f64().unwrap()
        ));
        // The websocket positions are in none of them.
        let frame = payload("websocket/positions.json");
        for p in frame["positions"].as_array().unwrap() {
            let (lat, lon) = (
                p["latitude"].as_f64().unwrap(),
                p["longitude"].as_f64().unwrap(),
            );
            for s in [geofence_of(&enter), circle.clone(), line.clone()] {
                assert!(!s.contains(lat, lon), "{lat} {lon} in {s:?}");
            }
        }
    }

    #[test]
    fn circle_boundary_is_haversine_with_traccars_radius() {
        let c = Shape::parse("CIRCLE (47.26221 11.41352, 50)", None).unwrap();
        // 1 degree of latitude is R * pi / 180 m on Traccar's sphere.
        let per_deg = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;
        assert!(c.contains(47.26221 + 49.99 / per_deg, 11.41352));
        assert!(!c.contains(47.26221 + 50.01 / per_deg, 11.41352));
        assert!((distance(0.0, 0.0, 1.0, 0.0) - per_deg).abs() < 1e-6);
    }

    #[test]
    fn bearing_points_clockwise_from_north() {
        let b = |lat2, lon2| bearing(47.0, 11.0, lat2, lon2);
        assert!(b(47.01, 11.0).abs() < 1e-9, "north");
        assert!((b(47.0, 11.01) - 90.0).abs() < 0.01, "east");
        assert!((b(46.99, 11.0) - 180.0).abs() < 1e-9, "south");
        assert!((b(47.0, 10.99) - 270.0).abs() < 0.01, "west");
        assert!(
            (b(47.01, 11.01) - 34.3).abs() < 0.1,
            "north-east, narrowed by the latitude"
        );
        assert_eq!(bearing(47.0, 11.0, 47.0, 11.0), 0.0, "same point");
    }

    #[test]
    fn polygon_edges_follow_traccars_rule() {
        let p = Shape::parse(
            "POLYGON ((47.26985 11.39108, 47.26985 11.39565, 47.26688 11.39565, 47.26688 11.39108, 47.26985 11.39108))",
            None,
        )
        .unwrap();
        assert!(p.contains(47.268, 11.393));
        assert!(!p.contains(47.270, 11.393));
        assert!(!p.contains(47.268, 11.396));
        // Traccar's ray test: west edge (lon equal to a corner) counts out, east edge in.
        assert!(!p.contains(47.268, 11.39108));
        assert!(p.contains(47.268, 11.39565));
        // A square over the antimeridian.
        let t = Shape::parse("POLYGON ((10 170, 10 -170, -10 -170, -10 170))", None).unwrap();
        assert!(t.contains(0.0, 179.0) && t.contains(0.0, -179.0));
        assert!(!t.contains(0.0, 0.0));
    }

    #[test]
    fn line_corridor_is_distance_to_segments() {
        let l = Shape::parse("LINESTRING (0 0, 0 1)", Some(100.0)).unwrap();
        let per_deg = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;
        assert!(l.contains(99.0 / per_deg, 0.5));
        assert!(!l.contains(101.0 / per_deg, 0.5));
        // Past an end: the distance to the end point.
        assert!(l.contains(0.0, 1.0 + 99.0 / per_deg));
        assert!(!l.contains(0.0, 1.0 + 101.0 / per_deg));
        // On the line itself.
        assert!(l.contains(0.0, 0.25));
        let default = Shape::parse("LINESTRING (0 0, 0 1)", None).unwrap();
        assert!(
            matches!(default, Shape::Line { distance, .. } if distance == DEFAULT_LINE_DISTANCE_M)
        );
    }

    #[test]
    fn bad_wkt_is_a_clear_error() {
        for (wkt, want) in [
            ("CIRCLE (47.2 11.4)", "CIRCLE: expected"),
            ("CIRCLE (47.2 11.4, -5)", "must be positive"),
            ("CIRCLE (47.2 x, 5)", "`x` is not a number"),
            ("POLYGON ((1 1, 2 2))", "at least 3 corners"),
            ("POLYGON ((1 1, 2 2, 3 3), (0 0, 1 1, 2 2))", "one ring"),
            ("LINESTRING (1 1)", "at least 2 points"),
            ("POINT (1 1)", "unknown geofence kind `POINT`"),
            ("CIRCLE 47 11, 5", "expected `KIND (...)`"),
            ("CIRCLE (11.4 147.2 3, 5)", "expected `latitude longitude`"),
            ("CIRCLE (147.2 11.4, 5)", "latitude first"),
        ] {
            let e = Shape::parse(wkt, None).unwrap_err().to_string();
            assert!(e.contains(want), "{wkt}: {e}");
        }
    }
}
