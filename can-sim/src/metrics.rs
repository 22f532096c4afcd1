//! Receiver bookkeeping per message: distinct receptions, duplicates, reordering, latency
//! (kernel RX timestamp - release) and inter-arrival jitter (|delta t - k * period|) as
//! HDR histograms, deadline misses. Pure: fed with (sequence, release, RX time) triples,
//! tested without a bus. `on_frame` neither allocates nor locks.

use hdrhistogram::Histogram;
use record::hist::{self, HistSummary};
use record::CanMessageRecord;

use crate::e2e::E2eState;
use crate::schedule::MessagePlan;
use crate::timing;

/// Sequence numbers remembered behind the highest one seen (duplicate detection window).
pub const WINDOW: u64 = 1024;
const WORDS: usize = 16; // WINDOW / 64

/// One message's receive statistics.
#[derive(Debug, Clone)]
pub struct MsgStats {
    /// Distinct frames received.
    pub received: u64,
    /// Frames seen again.
    pub duplicates: u64,
    /// Frames arriving after a higher sequence number.
    pub reordered: u64,
    /// Latencies above the deadline.
    pub deadline_misses: u64,
    /// Latencies that were negative (RX stamp before release: clock trouble) or too large
    /// for the histogram: counted, not recorded.
    pub out_of_range: u64,
    /// Release -> RX, ns.
    pub latency: Histogram<u64>,
    /// |inter-arrival - k * period|, ns.
    pub jitter: Histogram<u64>,
    /// The E2E check state of a protected message.
    pub e2e: Option<E2eState>,
    max_seq: Option<u64>,
    seen: [u64; WORDS],
    last_rx_ns: u64,
}

impl MsgStats {
    /// Fresh statistics for `m`, the histograms sized to the data (`hist::new_auto`:
    /// they start small and grow to the largest value recorded, so ten thousand messages
    /// do not preallocate 60 s of range each; a new largest value is the only allocation).
    pub fn new(m: &MessagePlan) -> Self {
        MsgStats {
            received: 0,
            duplicates: 0,
            reordered: 0,
            deadline_misses: 0,
            out_of_range: 0,
            latency: hist::new_auto(),
            jitter: hist::new_auto(),
            e2e: m.e2e.as_ref().map(E2eState::new),
            max_seq: None,
            seen: [0; WORDS],
            last_rx_ns: 0,
        }
    }

    /// The sequence number expected next (reference for widening truncated ones).
    pub fn next_seq(&self) -> u64 {
        self.max_seq.map_or(0, |s| s + 1)
    }

    fn bit(&mut self, back: u64) -> (&mut u64, u64) {
        let word = usize::try_from(back / 64).unwrap_or(0);
        (&mut self.seen[word], 1u64 << (back % 64))
    }

    fn shift(&mut self, by: u64) {
        if by >= WINDOW {
            self.seen = [0; WORDS];
            return;
        }
        let words = usize::try_from(by / 64).unwrap_or(WORDS);
        let bits = by % 64;
        for i in (0..WORDS).rev() {
            let src = i.checked_sub(words);
            let hi = src.map_or(0, |s| self.seen[s]);
            let lo = src
                .and_then(|s| s.checked_sub(1))
                .map_or(0, |s| self.seen[s]);
            self.seen[i] = if bits == 0 {
                hi
            } else {
                (hi << bits) | (lo >> (64 - bits))
            };
        }
    }

    /// Account one received frame. `seq` None: the payload was empty (counted as received,
    /// no loss or order tracking). `release_ns` None: no latency for this frame.
    pub fn on_frame(
        &mut self,
        m: &MessagePlan,
        seq: Option<u64>,
        release_ns: Option<u64>,
        rx_ns: u64,
    ) {
        let mut in_order_gap = Some(1u64);
        if let Some(seq) = seq {
            match self.max_seq {
                Some(max) if seq <= max => {
                    let back = max - seq;
                    if back < WINDOW {
                        let (w, b) = self.bit(back);
                        if *w & b != 0 {
                            self.duplicates += 1;
                            return;
                        }
                        *w |= b;
                    }
                    self.reordered += 1;
                    in_order_gap = None;
                }
                prev => {
                    let gap = prev.map_or(0, |max| seq - max);
                    self.shift(gap);
                    self.seen[0] |= 1;
                    self.max_seq = Some(seq);
                    // The first frame (gap 0) only starts the inter-arrival clock.
                    in_order_gap = Some(gap);
                }
            }
        }
        self.received += 1;
        if let Some(rel) = release_ns {
            match rx_ns.checked_sub(rel) {
                Some(lat) if hist::record(&mut self.latency, lat.max(1)) => {
                    if lat > m.deadline_ns {
                        self.deadline_misses += 1;
                    }
                }
                _ => self.out_of_range += 1,
            }
        }
        if let Some(k) = in_order_gap {
            if k > 0 && self.last_rx_ns != 0 && rx_ns >= self.last_rx_ns {
                let dt = rx_ns - self.last_rx_ns;
                let expect = k.saturating_mul(m.period_ns);
                hist::record(&mut self.jitter, dt.abs_diff(expect).max(1));
            }
            self.last_rx_ns = rx_ns;
        }
    }

    /// The record for `can.json`, given the frames the sender got accepted, and the run's
    /// start and end of sending (for the last E2E timeout).
    pub fn record(
        &self,
        m: &MessagePlan,
        sent: u64,
        wcrt_ns: Option<u64>,
        start_ns: u64,
        end_ns: u64,
    ) -> CanMessageRecord {
        CanMessageRecord {
            ecu: m.ecu_name.clone(),
            name: m.name.clone(),
            id: m.id,
            extended: m.spec.extended,
            kind: timing::kind_name(m.spec.kind).to_string(),
            len: m.spec.len,
            period_us: m.period_ns / 1000,
            deadline_us: m.deadline_ns / 1000,
            sent,
            received: self.received,
            lost: sent.saturating_sub(self.received),
            duplicates: self.duplicates,
            reordered: self.reordered,
            deadline_misses: self.deadline_misses,
            latency: HistSummary::from_hist(&self.latency),
            jitter: HistSummary::from_hist(&self.jitter),
            frame_time_us: timing::ns_to_us(m.frame_ns),
            wcrt_us: wcrt_ns.map(timing::ns_to_us),
            sporadic: m.sporadic,
            signals: u32::try_from(m.signals).unwrap_or(u32::MAX),
            instance_from: if m.test_payload() {
                "payload"
            } else if m.e2e.is_some() {
                "e2e_counter"
            } else {
                "schedule"
            }
            .into(),
            e2e: match (&m.e2e, &self.e2e) {
                (Some(spec), Some(st)) => Some(st.finish(spec, start_ns + m.offset_ns, end_ns)),
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Plan;

    fn plan() -> Plan {
        let p = profiles::load("lab").unwrap().profile;
        Plan::from_can(p.can.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn counts_loss_duplicates_and_reordering() {
        let plan = plan();
        let m = &plan.messages[0]; // EngineSpeed, 10 ms, deadline 5 ms
        let mut s = MsgStats::new(m);
        let t0 = 1_000_000_000u64;
        let per = m.period_ns;
        // seq 0, 1, (2 lost), 4, 3 (late), 3 (dup), 5 with a 6 ms latency (deadline miss)
        for (seq, lat) in [
            (0u64, 300_000u64),
            (1, 310_000),
            (4, 290_000),
            (3, 280_000),
            (3, 280_000),
            (5, 6_000_000),
        ] {
            let rel = t0 + seq * per;
            s.on_frame(m, Some(seq), Some(rel), rel + lat);
        }
        assert_eq!(s.received, 5);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.reordered, 1);
        assert_eq!(s.deadline_misses, 1);
        let r = s.record(m, 6, Some(1_000_000), 0, 1_000_000_000);
        assert_eq!(r.lost, 1);
        assert_eq!(r.latency.samples, 5);
        assert!(r.latency.max_ns >= 5_990_000);
        assert_eq!(r.wcrt_us, Some(1000.0));
        // Jitter: 0->1 |10.01-10| = 10 us; 1->4 (k=3) |29.98-30| = 20 us; 4->5 |15.71-10| ms.
        assert_eq!(s.jitter.len(), 3);
        assert!(
            s.jitter.min() >= 9_990 && s.jitter.min() <= 10_010,
            "{}",
            s.jitter.min()
        );
        assert!(s.jitter.max() >= 5_700_000);
    }

    #[test]
    fn window_survives_large_gaps() {
        let plan = plan();
        let m = &plan.messages[0];
        let mut s = MsgStats::new(m);
        for seq in [0u64, 1, 70, 5000, 4999, 70] {
            s.on_frame(m, Some(seq), None, 1 + seq);
        }
        // 70 after 5000 is beyond the window: counted as reordered, not as a duplicate.
        assert_eq!(s.received, 6);
        assert_eq!(s.duplicates, 0);
        assert_eq!(s.reordered, 2);
        s.on_frame(m, Some(4999), None, 6000);
        assert_eq!(s.duplicates, 1);
    }

    #[test]
    fn negative_latency_is_counted_not_wrapped() {
        let plan = plan();
        let m = &plan.messages[0];
        let mut s = MsgStats::new(m);
        s.on_frame(m, Some(0), Some(2_000), 1_000);
        assert_eq!(s.out_of_range, 1);
        assert_eq!(s.latency.len(), 0);
    }
}
