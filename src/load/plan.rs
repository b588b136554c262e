//! What the load generator aims for over time: k6-style stages (ramp
//! linearly to a target over a duration), the connection rate cap, and
//! how a plan is shared among load hosts (`--segment`) and among one host's
//! child processes.

use std::time::Duration;

/// One stage: move linearly from the previous target to `target` over
/// `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    /// How long the stage lasts.
    pub duration: Duration,
    /// Open connections wanted at its end.
    pub target: usize,
}

/// Parses `DURATION:TARGET`, e.g. `60s:5000`.
pub fn parse_stage(s: &str) -> Result<Stage, String> {
    let (d, n) = s.split_once(':').ok_or_else(|| format!("'{s}' is not DURATION:TARGET (e.g. 60s:5000)"))?;
    let duration = crate::units::parse_duration(d)?;
    let target = n.trim().parse().map_err(|_| format!("'{n}' is not a connection count"))?;
    Ok(Stage { duration, target })
}

/// The whole plan: stages one after another, starting from 0 connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The stages, in order.
    pub stages: Vec<Stage>,
}

impl Plan {
    /// A fixed count: ramp to `conns` as fast as `rate` allows, hold for
    /// `hold`, then (the driver) closes everything.
    pub fn fixed(conns: usize, rate: u32, hold: Duration) -> Plan {
        let ramp = Duration::from_secs_f64(conns as f64 / f64::from(rate.max(1)));
        Plan { stages: vec![Stage { duration: ramp, target: conns }, Stage { duration: hold, target: conns }] }
    }

    /// Total length of the plan.
    pub fn duration(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// The largest target of any stage.
    pub fn peak(&self) -> usize {
        self.stages.iter().map(|s| s.target).max().unwrap_or(0)
    }

    /// Connections wanted `elapsed` into the plan (the last target after it ends).
    pub fn target_at(&self, elapsed: Duration) -> usize {
        let mut start = Duration::ZERO;
        let mut from = 0usize;
        for stage in &self.stages {
            let end = start + stage.duration;
            if elapsed < end {
                let frac = (elapsed - start).as_secs_f64() / stage.duration.as_secs_f64().max(1e-9);
                let value = from as f64 + (stage.target as f64 - from as f64) * frac;
                return value.round().max(0.0) as usize;
            }
            start = end;
            from = stage.target;
        }
        from
    }

    /// This child's share when the plan is split `count` ways: targets
    /// divided as evenly as whole connections allow.
    pub fn share(&self, index: usize, count: usize) -> Plan {
        let part = |n: usize| part_of(n as u64, index, count) as usize;
        Plan { stages: self.stages.iter().map(|s| Stage { duration: s.duration, target: part(s.target) }).collect() }
    }
}

/// The part `index` of `count` of a whole `n`: parts as even as whole
/// units allow, the first ones one larger; all of them add up to `n`.
pub fn part_of(n: u64, index: usize, count: usize) -> u64 {
    let count = count.max(1) as u64;
    n / count + u64::from((index as u64) < n % count)
}

/// `--segment K/N`: this load host runs part K of a plan split N ways, so
/// N hosts drive one plan without overlap (what k6's execution segments
/// do for k6 instances).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// 1-based: which part.
    pub k: usize,
    /// How many parts.
    pub n: usize,
}

/// Parses `K/N` with 1 <= K <= N.
pub fn parse_segment(s: &str) -> Result<Segment, String> {
    let bad = || format!("'{s}' is not K/N with 1 <= K <= N (e.g. 2/3: the second of three load hosts)");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if k == 0 || k > n {
        return Err(bad());
    }
    Ok(Segment { k, n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn ramp_hold_down() {
        let plan = Plan {
            stages: vec![
                parse_stage("10s:1000").unwrap(),
                parse_stage("20s:1000").unwrap(),
                parse_stage("10s:0").unwrap(),
            ],
        };
        assert_eq!(plan.target_at(secs(0)), 0);
        assert_eq!(plan.target_at(secs(5)), 500);
        assert_eq!(plan.target_at(secs(15)), 1000);
        assert_eq!(plan.target_at(secs(35)), 500);
        assert_eq!(plan.target_at(secs(99)), 0);
        assert_eq!((plan.duration(), plan.peak()), (secs(40), 1000));
    }

    #[test]
    fn shares_add_up() {
        let plan = Plan { stages: vec![Stage { duration: secs(1), target: 100_001 }] };
        let total: usize = (0..6).map(|i| plan.share(i, 6).stages[0].target).sum();
        assert_eq!(total, 100_001);
    }

    #[test]
    fn segments_cover_the_plan_without_overlap() {
        assert_eq!(parse_segment("2/3"), Ok(Segment { k: 2, n: 3 }));
        for bad in ["0/3", "4/3", "3", "a/b", "1/0"] {
            assert!(parse_segment(bad).unwrap_err().contains("K/N"), "{bad}");
        }
        let parts: Vec<u64> = (0..3).map(|i| part_of(10_000, i, 3)).collect();
        assert_eq!(parts, [3334, 3333, 3333]);
        assert_eq!((0..3).map(|i| part_of(2, i, 3)).collect::<Vec<_>>(), [1, 1, 0]);
    }

    #[test]
    fn bad_stages_say_why() {
        assert!(parse_stage("5000").unwrap_err().contains("DURATION:TARGET"));
        assert!(parse_stage("10x:5").is_err());
        assert!(parse_stage("10s:many").unwrap_err().contains("many"));
    }
}
