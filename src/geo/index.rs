//! [`ZoneIndex`]: an R-tree of conservative bounding boxes of the zones, so that a position is tested
//! exactly only against the few zones whose box holds it.
//!
//! Each box holds every point its shape's [`Shape::contains`] can report, rounding included:
//! - a circle: the latitudes within its angular radius, and the longitudes of the spherical cap
//!   (`asin(sin δ / cos φ)`); a cap that reaches a pole spans every longitude;
//! - a polygon: its corners' range, in the longitudes of its ray test (shifted by 360° when it lies
//!   across the antimeridian);
//! - a line: per segment of length `L` and corridor `d`, Traccar's Heron distance `<= d` implies that
//!   the point is within `L + d` of both ends (the proof is on [`segment_boxes`]): the overlap of those
//!   two circles' boxes.
//!
//! A box that runs past longitude ±180 is split in two. Boxes are widened by a small margin (about a
//! millimetre) against rounding.

use rstar::primitives::{GeomWithData, Rectangle};
use rstar::RTree;

use super::{distance, Shape, Zone, EARTH_RADIUS_M};

/// Relative and absolute (degrees) widening of every box against rounding.
const REL_MARGIN: f64 = 1e-9;
const ABS_MARGIN_DEG: f64 = 1e-8;
/// Relative widening of a line segment's radius (Heron's rounding, see [`segment_boxes`]).
const SEGMENT_MARGIN: f64 = 1e-6;

/// A box in degrees: `[lon, lat]` corners, longitudes within [-180, 180].
type Rect = ([f64; 2], [f64; 2]);

/// The spatial index of a zone list: which zones may hold a point.
#[derive(Debug, Default)]
pub struct ZoneIndex {
    tree: RTree<GeomWithData<Rectangle<[f64; 2]>, u32>>,
}

impl ZoneIndex {
    /// The index of `zones` (their positions in the slice are what [`ZoneIndex::candidates`] returns).
    pub fn new(zones: &[Zone]) -> ZoneIndex {
        let entries = zones
            .iter()
            .enumerate()
            .flat_map(|(i, z)| {
                let i = u32::try_from(i).expect("fewer than 2^32 zones");
                shape_boxes(&z.shape)
                    .into_iter()
                    .map(move |(lo, hi)| GeomWithData::new(Rectangle::from_corners(lo, hi), i))
            })
            .collect();
        ZoneIndex {
            tree: RTree::bulk_load(entries),
        }
    }

    /// Appends to `out` the zones whose box holds `(lat, lon)`, ascending and without repeats: a
    /// superset of the zones that contain it.
    pub fn candidates(&self, lat: f64, lon: f64, out: &mut Vec<u32>) {
        let start = out.len();
        // Longitudes come within [-180, 180]; one outside is looked up at its equivalent (the shapes'
        // tests treat it no differently, or only ever as outside).
        let lon = if lon.is_finite() && !(-180.0..=180.0).contains(&lon) {
            (lon + 180.0).rem_euclid(360.0) - 180.0
        } else {
            lon
        };
        out.extend(
            self.tree
                .locate_all_at_point(&[lon, lat])
                .map(|entry| entry.data),
        );
        let found = &mut out[start..];
        found.sort_unstable();
        let unique = dedup_len(found);
        out.truncate(start + unique);
    }
}

/// Moves the distinct values of sorted `v` to its front; returns how many there are.
fn dedup_len(v: &mut [u32]) -> usize {
    let mut n = 0;
    for i in 0..v.len() {
        if n == 0 || v[i] != v[n - 1] {
            v[n] = v[i];
            n += 1;
        }
    }
    n
}

/// The boxes that together hold every point `shape` contains.
fn shape_boxes(shape: &Shape) -> Vec<Rect> {
    match shape {
        Shape::Circle { lat, lon, radius } => circle_boxes(*lat, *lon, *radius),
        Shape::Polygon(p) => {
            let lats = p.corners.iter().map(|c| c.0);
            let lons = p.corners.iter().map(|c| p.norm(c.1));
            let (lat_lo, lat_hi) = range(lats);
            let (lon_lo, lon_hi) = range(lons);
            boxes(widen(lat_lo, lat_hi), widen(lon_lo, lon_hi))
        }
        Shape::Line { points, distance } => points
            .windows(2)
            .flat_map(|w| segment_boxes(w[0], w[1], *distance))
            .collect(),
    }
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// `(lo, hi)` widened by the margin.
fn widen(lo: f64, hi: f64) -> (f64, f64) {
    let m = |v: f64| v.abs() * REL_MARGIN + ABS_MARGIN_DEG;
    (lo - m(lo), hi + m(hi))
}

/// The boxes of a latitude range and a longitude range that may run past ±180 (split there) or span
/// all longitudes.
fn boxes(lat: (f64, f64), lon: (f64, f64)) -> Vec<Rect> {
    let (lat_lo, lat_hi) = (lat.0.max(-90.0), lat.1.min(90.0));
    let rect = |lo: f64, hi: f64| ([lo, lat_lo], [hi, lat_hi]);
    let (lo, hi) = lon;
    if hi - lo >= 360.0 {
        vec![rect(-180.0, 180.0)]
    } else if lo < -180.0 {
        vec![rect(lo + 360.0, 180.0), rect(-180.0, hi)]
    } else if hi > 180.0 {
        vec![rect(lo, 180.0), rect(-180.0, hi - 360.0)]
    } else {
        vec![rect(lo, hi)]
    }
}

/// The boxes of the points within `radius` metres (haversine) of `(lat, lon)`.
fn circle_boxes(lat: f64, lon: f64, radius: f64) -> Vec<Rect> {
    let delta = radius / EARTH_RADIUS_M; // angular radius, radians
    let dlat = delta.to_degrees();
    let lats = widen(lat - dlat, lat + dlat);
    let all = (-180.0, 180.0);
    if delta >= std::f64::consts::FRAC_PI_2 || lats.0 <= -90.0 || lats.1 >= 90.0 {
        // A cap that reaches a pole (or a hemisphere) spans every longitude.
        return boxes(lats, all);
    }
    let s = delta.sin() / lat.to_radians().cos();
    if s >= 1.0 {
        return boxes(lats, all);
    }
    let dlon = s.asin().to_degrees();
    boxes(lats, widen(lon - dlon, lon + dlon))
}

/// The boxes of a line segment `a`–`b` (`(lat, lon)`) with corridor `d` metres.
///
/// Traccar's segment distance is `d2` or `d0` (the haversine distances to the ends), or the height
/// `h` of the planar triangle with sides `d0, d1, d2` when neither base angle is obtuse. With `L = d1`:
/// if it returns `d2 <= d`, then `d0 <= L + d2 <= L + d` (triangle inequality); likewise for `d0`; if
/// `L = 0` it returns `d0 <= d` and `d2 <= d0`; otherwise the foot of the height lies on the base, so
/// `d0² = h² + x²` with `0 <= x <= L`, and `d0 <= √(d² + L²) <= L + d` (and so for `d2`). So a point
/// within the corridor is within `L + d` of both ends.
///
/// That holds for exact arithmetic; in floating point Heron's factors `p - d0` and `p - d2` carry an
/// error of about `1e-16 · d0`, which stays negligible against a base `L` of a millimetre or more
/// (hence the margin of `1e-6` relative). Over a shorter base (two corners a hair apart, or at a pole
/// under different longitudes) the formula is rounding noise and may call a point thousands of
/// kilometres away inside: such a segment's box is the whole world, so the index still agrees with
/// [`Shape::contains`]. A base of exactly 0 m is the distance to its end.
fn segment_boxes(a: (f64, f64), b: (f64, f64), d: f64) -> Vec<Rect> {
    let base = distance(a.0, a.1, b.0, b.1);
    if base == 0.0 {
        let r = d * (1.0 + SEGMENT_MARGIN) + 1e-3;
        let mut both = circle_boxes(a.0, a.1, r);
        both.extend(circle_boxes(b.0, b.1, r));
        return both;
    }
    if base < 1e-3 {
        return boxes((-90.0, 90.0), (-180.0, 180.0));
    }
    let r = (base + d) * (1.0 + SEGMENT_MARGIN) + 1e-3;
    let (ba, bb) = (circle_boxes(a.0, a.1, r), circle_boxes(b.0, b.1, r));
    match (&ba[..], &bb[..]) {
        // Two plain boxes: their overlap (it is not empty: each holds both ends' common points).
        ([x], [y]) if x.0[0] <= y.1[0] && y.0[0] <= x.1[0] => vec![(
            [x.0[0].max(y.0[0]), x.0[1].max(y.0[1])],
            [x.1[0].min(y.1[0]), x.1[1].min(y.1[1])],
        )],
        // Split over the antimeridian or around a pole: one end's boxes suffice.
        _ => ba,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::time::Duration;

    fn zone(i: usize, shape: Shape) -> Zone {
        Zone {
            id: i as i64 + 1,
            name: format!("z{i}"),
            area: String::new(),
            shape,
            dwell: Duration::ZERO,
        }
    }

    fn lon_wrap(lon: f64) -> f64 {
        (lon + 180.0).rem_euclid(360.0) - 180.0
    }

    /// A random shape near `(lat, lon)`: circles from metres to thousands of kilometres, polygons
    /// (some over the antimeridian), lines.
    fn random_shape(rng: &mut StdRng, lat: f64, lon: f64) -> Shape {
        let wkt = |pts: &[(f64, f64)]| {
            pts.iter()
                .map(|(a, b)| format!("{a} {b}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let around = |rng: &mut StdRng, n: usize, spread: f64| -> Vec<(f64, f64)> {
            (0..n)
                .map(|_| {
                    (
                        (lat + rng.random_range(-spread..spread)).clamp(-90.0, 90.0),
                        lon_wrap(lon + rng.random_range(-spread..spread)),
                    )
                })
                .collect()
        };
        match rng.random_range(0..3) {
            0 => {
                let r = 10f64.powf(rng.random_range(0.0..6.8));
                Shape::parse(&format!("CIRCLE ({lat} {lon}, {r})"), None).unwrap()
            }
            1 => {
                let spread = 10f64.powf(rng.random_range(-3.0..1.3));
                let n = rng.random_range(3..12);
                Shape::parse(
                    &format!("POLYGON (({}))", wkt(&around(rng, n, spread))),
                    None,
                )
                .unwrap()
            }
            _ => {
                let spread = 10f64.powf(rng.random_range(-3.0..1.0));
                let n = rng.random_range(2..8);
                let d = 10f64.powf(rng.random_range(0.0..4.0));
                let line = format!("LINESTRING ({})", wkt(&around(rng, n, spread)));
                Shape::parse(&line, Some(d)).unwrap()
            }
        }
    }

    /// Points near the shape's edges: around its centre at the scale of its size, and close to its
    /// corners.
    fn probes(rng: &mut StdRng, shape: &Shape, n: usize) -> Vec<(f64, f64)> {
        let anchors: Vec<((f64, f64), f64)> = match shape {
            Shape::Circle { lat, lon, radius } => {
                let deg = radius / EARTH_RADIUS_M * 57.3;
                vec![((*lat, *lon), deg * 1.2)]
            }
            Shape::Polygon(p) => p.corners.iter().map(|c| (*c, 0.01)).collect(),
            Shape::Line { points, distance } => points
                .iter()
                .map(|c| (*c, distance / EARTH_RADIUS_M * 57.3 * 3.0 + 0.01))
                .collect(),
        };
        (0..n)
            .map(|_| {
                let ((lat, lon), s) = anchors[rng.random_range(0..anchors.len())];
                let s = s * 10f64.powf(rng.random_range(-4.0..0.5));
                (
                    (lat + rng.random_range(-s..s)).clamp(-90.0, 90.0),
                    lon_wrap(lon + rng.random_range(-s..s) / lat.to_radians().cos().max(0.01)),
                )
            })
            .collect()
    }

    fn assert_no_miss(zones: &[Zone], points: &[(f64, f64)]) -> usize {
        let index = ZoneIndex::new(zones);
        let (mut hits, mut cands) = (0, Vec::new());
        for &(lat, lon) in points {
            cands.clear();
            index.candidates(lat, lon, &mut cands);
            for (i, z) in zones.iter().enumerate() {
                if z.shape.contains(lat, lon) {
                    hits += 1;
                    assert!(
                        cands.binary_search(&(i as u32)).is_ok(),
                        "({lat}, {lon}) is in {:?} but not a candidate",
                        z.shape
                    );
                }
            }
        }
        hits
    }

    #[test]
    fn the_index_never_misses_a_zone_that_contains_the_point() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut zones = Vec::new();
        let mut points = Vec::new();
        for i in 0..200 {
            // Anywhere, a third of them near the antimeridian or a pole.
            let (lat, lon) = match i % 3 {
                0 => (
                    rng.random_range(-89.9..89.9),
                    rng.random_range(-180.0..180.0),
                ),
                1 => (
                    rng.random_range(-60.0..60.0),
                    lon_wrap(180.0 + rng.random_range(-2.0..2.0)),
                ),
                _ => (
                    rng.random_range(80.0..90.0) * if i % 2 == 0 { 1.0 } else { -1.0 },
                    rng.random_range(-180.0..180.0),
                ),
            };
            let shape = random_shape(&mut rng, lat, lon);
            points.extend(probes(&mut rng, &shape, 150));
            zones.push(zone(i, shape));
        }
        for _ in 0..5_000 {
            points.push((
                rng.random_range(-90.0..90.0),
                rng.random_range(-180.0..180.0),
            ));
        }
        let hits = assert_no_miss(&zones, &points);
        assert!(hits > 10_000, "the probes found the zones: {hits}");
    }

    #[test]
    fn shapes_across_the_antimeridian_and_at_the_poles() {
        let shapes = [
            "CIRCLE (0 179.9999, 100)",
            "CIRCLE (-45 -179.99, 5000)",
            "CIRCLE (89.9999 0, 1000)",
            "CIRCLE (0 0, 30000000)",
            "POLYGON ((10 170, 10 -170, -10 -170, -10 170))",
            "LINESTRING (0 179.9, 0 -179.9)",
            "LINESTRING (89.99 0, 89.99 180)",
        ];
        let zones: Vec<Zone> = shapes
            .iter()
            .enumerate()
            .map(|(i, w)| zone(i, Shape::parse(w, Some(500.0)).unwrap()))
            .collect();
        let mut rng = StdRng::seed_from_u64(8);
        let mut points = vec![
            (0.0, 180.0),
            (0.0, -180.0),
            (0.0, 179.0),
            (90.0, 0.0),
            (0.0, -179.0),
        ];
        for z in &zones {
            points.extend(probes(&mut rng, &z.shape, 2_000));
        }
        let hits = assert_no_miss(&zones, &points);
        assert!(hits > 2_000, "{hits}");
        // The index narrows: a point far from all but the world-spanning circle has one candidate.
        let index = ZoneIndex::new(&zones);
        let mut c = Vec::new();
        index.candidates(40.0, 20.0, &mut c);
        assert_eq!(c, [3]);
    }
}
