//! AUTOSAR E2E protection of CAN payloads (AUTOSAR PRS E2E Protocol, profiles 1, 2, 5 and
//! 11; CRCs of the AUTOSAR CRC library): the sender writes the alive counter and the CRC
//! into every frame ([`E2eSpec::protect`]), the receiver checks every frame
//! ([`E2eState::on_frame`]) and counts what AUTOSAR's check would report, plus timeouts.
//!
//! CRCs (the `crc` crate's catalogue):
//! - Profiles 1 and 11: CRC-8 SAE J1850 (poly 0x1D). The profile chains
//!   `Crc_CalculateCRC8(.., start 0xFF, IsFirstCall FALSE)` over the data id and the
//!   payload and XORs once at the end, which is the plain register with initial value 0
//!   and no final XOR.
//! - Profile 2: CRC-8H2F (`CRC_8_AUTOSAR`, poly 0x2F) over the payload without its CRC
//!   byte, then `data_id_list[counter]`.
//! - Profile 5: CRC-16 CCITT-FALSE (`CRC_16_IBM_3740`, poly 0x1021) over the payload
//!   without its CRC, then the data id, low byte first; the CRC is written little-endian.
//!
//! Nothing here allocates: protect and check run in the send and receive loops.

use crc::{Crc, CRC_16_IBM_3740, CRC_8_AUTOSAR, CRC_8_SAE_J1850};
use profiles::{DataIdMode, E2e, E2eProfile};
use record::E2eCounts;

const SAE_J1850: Crc<u8> = Crc::<u8>::new(&CRC_8_SAE_J1850);
const H2F: Crc<u8> = Crc::<u8>::new(&CRC_8_AUTOSAR);
const CCITT: Crc<u16> = Crc::<u16>::new(&CRC_16_IBM_3740);

/// The E2E protection of one message, ready for the hot loops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E2eSpec {
    /// The profile.
    pub profile: E2eProfile,
    /// Data id (P01, P05, P11).
    pub data_id: u16,
    /// Data ids by counter (P02).
    pub data_id_list: [u8; 16],
    /// How the data id enters the CRC (P01, P11).
    pub mode: DataIdMode,
    /// Byte of the header in the payload.
    pub offset: usize,
    /// Largest counter step accepted as "some lost".
    pub max_delta: u8,
    /// No valid frame for this long is a timeout, ns.
    pub timeout_ns: u64,
}

/// The outcome of checking one frame (AUTOSAR's check statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Counter one up (or the first frame).
    Ok,
    /// Counter up by 2 ..= max delta.
    OkSomeLost,
    /// The same counter again.
    Repeated,
    /// Counter up by more than max delta.
    WrongSequence,
    /// CRC or data id nibble wrong.
    Error,
}

impl E2eSpec {
    /// From the profile; the timeout defaults to period + deadline.
    pub fn new(x: &E2e, period_ns: u64, deadline_ns: u64) -> E2eSpec {
        let mut list = [0u8; 16];
        for (d, s) in list.iter_mut().zip(&x.data_id_list) {
            *d = *s;
        }
        let timeout_ns = x
            .timeout_ms
            .and_then(|ms| crate::timing::f64_to_u64((ms * 1e6).round()))
            .unwrap_or_else(|| period_ns.saturating_add(deadline_ns));
        E2eSpec {
            profile: x.profile,
            data_id: x.data_id,
            data_id_list: list,
            mode: x.data_id_mode,
            offset: usize::from(x.offset_bits / 8),
            max_delta: x.max_delta_counter,
            timeout_ns,
        }
    }

    /// Number of counter values (the counter runs 0 .. modulus - 1).
    pub fn modulus(&self) -> u64 {
        match self.profile {
            E2eProfile::P01 | E2eProfile::P11 => 15,
            E2eProfile::P02 => 16,
            E2eProfile::P05 => 256,
        }
    }

    /// The profile's name as records write it.
    pub fn name(&self) -> &'static str {
        match self.profile {
            E2eProfile::P01 => "P01",
            E2eProfile::P02 => "P02",
            E2eProfile::P05 => "P05",
            E2eProfile::P11 => "P11",
        }
    }

    /// P01/P11: CRC-8 SAE J1850 over the data id bytes (by mode), then the payload
    /// without the CRC byte.
    fn crc_p01(&self, buf: &[u8], counter: u8) -> u8 {
        let [lo, hi] = self.data_id.to_le_bytes();
        let mut d = SAE_J1850.digest_with_initial(0x00);
        match self.mode {
            DataIdMode::Both => d.update(&[lo, hi]),
            DataIdMode::Low => d.update(&[lo]),
            DataIdMode::Alt if counter % 2 == 0 => d.update(&[lo]),
            DataIdMode::Alt => d.update(&[hi]),
            DataIdMode::Nibble => d.update(&[lo, 0]),
        }
        d.update(&buf[..self.offset]);
        d.update(&buf[self.offset + 1..]);
        // The catalogue's final XOR (0xFF) undone: the profile XORs once.
        d.finalize() ^ 0xFF
    }

    fn crc_p02(&self, buf: &[u8], counter: u8) -> u8 {
        let mut d = H2F.digest();
        d.update(&buf[1..]);
        d.update(&[self.data_id_list[usize::from(counter & 0x0F)]]);
        d.finalize()
    }

    fn crc_p05(&self, buf: &[u8]) -> u16 {
        let mut d = CCITT.digest();
        d.update(&buf[..self.offset]);
        d.update(&buf[self.offset + 2..]);
        d.update(&self.data_id.to_le_bytes());
        d.finalize()
    }

    /// Write counter `counter` (taken modulo [`Self::modulus`]) and the CRC into `buf`
    /// (the whole payload).
    pub fn protect(&self, buf: &mut [u8], counter: u64) {
        let c = u8::try_from(counter % self.modulus()).unwrap_or(0);
        let o = self.offset;
        match self.profile {
            E2eProfile::P01 | E2eProfile::P11 => {
                let nibble = if self.mode == DataIdMode::Nibble {
                    u8::try_from((self.data_id >> 8) & 0x0F).unwrap_or(0) << 4
                } else {
                    buf[o + 1] & 0xF0
                };
                buf[o + 1] = nibble | c;
                buf[o] = self.crc_p01(buf, c);
            }
            E2eProfile::P02 => {
                buf[1] = (buf[1] & 0xF0) | c;
                buf[0] = self.crc_p02(buf, c);
            }
            E2eProfile::P05 => {
                buf[o + 2] = c;
                let crc = self.crc_p05(buf).to_le_bytes();
                buf[o..o + 2].copy_from_slice(&crc);
            }
        }
    }

    /// The counter of a frame whose CRC (and data id nibble) is right; None otherwise.
    pub fn verify(&self, buf: &[u8]) -> Option<u8> {
        let o = self.offset;
        let need = o + if self.profile == E2eProfile::P05 {
            3
        } else {
            2
        };
        if buf.len() < need {
            return None;
        }
        match self.profile {
            E2eProfile::P01 | E2eProfile::P11 => {
                let c = buf[o + 1] & 0x0F;
                let nibble_ok = self.mode != DataIdMode::Nibble
                    || u16::from(buf[o + 1] >> 4) == (self.data_id >> 8) & 0x0F;
                // Counter 15 is not a valid P01/P11 counter.
                (c < 15 && nibble_ok && buf[o] == self.crc_p01(buf, c)).then_some(c)
            }
            E2eProfile::P02 => {
                let c = buf[1] & 0x0F;
                (buf[0] == self.crc_p02(buf, c)).then_some(c)
            }
            E2eProfile::P05 => {
                let got = u16::from_le_bytes([buf[o], buf[o + 1]]);
                (got == self.crc_p05(buf)).then_some(buf[o + 2])
            }
        }
    }
}

/// The receiver's E2E state of one message, and its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E2eState {
    last_counter: Option<u8>,
    last_valid_ns: Option<u64>,
    /// The counts so far.
    pub counts: E2eCounts,
}

impl E2eState {
    /// A fresh state for `spec`.
    pub fn new(spec: &E2eSpec) -> E2eState {
        E2eState {
            last_counter: None,
            last_valid_ns: None,
            counts: E2eCounts {
                profile: spec.name().to_string(),
                timeout_us: spec.timeout_ns / 1000,
                ..E2eCounts::default()
            },
        }
    }

    /// Check one received frame at `rx_ns`; `since_ns` is when the first frame was due
    /// (start of the schedule + offset), the reference for the first timeout. Returns the
    /// status and, when the CRC holds, the frame's counter.
    pub fn on_frame(
        &mut self,
        spec: &E2eSpec,
        buf: &[u8],
        rx_ns: u64,
        since_ns: u64,
    ) -> (Status, Option<u8>) {
        let Some(c) = spec.verify(buf) else {
            self.counts.error += 1;
            return (Status::Error, None);
        };
        let status = match self.last_counter {
            None => Status::Ok,
            Some(last) => {
                let m = spec.modulus();
                let delta = (u64::from(c) + m - u64::from(last)) % m;
                match delta {
                    0 => Status::Repeated,
                    1 => Status::Ok,
                    d if d <= u64::from(spec.max_delta) => Status::OkSomeLost,
                    _ => Status::WrongSequence,
                }
            }
        };
        match status {
            Status::Ok => self.counts.ok += 1,
            Status::OkSomeLost => self.counts.ok_some_lost += 1,
            Status::Repeated => self.counts.repeated += 1,
            Status::WrongSequence => self.counts.wrong_sequence += 1,
            Status::Error => {}
        }
        if status != Status::Repeated {
            let prev = self.last_valid_ns.unwrap_or(since_ns);
            if rx_ns.saturating_sub(prev) > spec.timeout_ns {
                self.counts.timeout += 1;
            }
            self.last_valid_ns = Some(rx_ns);
            // AUTOSAR resynchronises on the received counter after a wrong sequence.
            self.last_counter = Some(c);
        }
        (status, Some(c))
    }

    /// The counts at the end of a run that sent until `end_ns` (one more timeout if the
    /// last valid frame is older than the timeout, or none ever came).
    pub fn finish(&self, spec: &E2eSpec, since_ns: u64, end_ns: u64) -> E2eCounts {
        let mut c = self.counts.clone();
        let last = self.last_valid_ns.unwrap_or(since_ns);
        if end_ns.saturating_sub(last) > spec.timeout_ns {
            c.timeout += 1;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(profile: E2eProfile, mode: DataIdMode) -> E2eSpec {
        E2eSpec {
            profile,
            data_id: 0x123,
            data_id_list: [0; 16],
            mode,
            offset: 0,
            max_delta: 2,
            timeout_ns: 20_000_000,
        }
    }

    /// The CRC library's check values (AUTOSAR SWS CRC Library, the examples of
    /// Crc_CalculateCRC8, Crc_CalculateCRC8H2F and Crc_CalculateCRC16 with their standard
    /// start values, first call).
    #[test]
    fn crc_library_check_values() {
        let data: [&[u8]; 7] = [
            &[0x00, 0x00, 0x00, 0x00],
            &[0xF2, 0x01, 0x83],
            &[0x0F, 0xAA, 0x00, 0x55],
            &[0x00, 0xFF, 0x55, 0x11],
            &[0x33, 0x22, 0x55, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF],
            &[0x92, 0x6B, 0x55],
            &[0xFF, 0xFF, 0xFF, 0xFF],
        ];
        let crc8: Vec<u8> = data.iter().map(|d| SAE_J1850.checksum(d)).collect();
        assert_eq!(crc8, vec![0x59, 0x37, 0x79, 0xB8, 0xCB, 0x8C, 0x74]);
        let h2f: Vec<u8> = data.iter().map(|d| H2F.checksum(d)).collect();
        assert_eq!(h2f, vec![0x12, 0xC2, 0xC6, 0x77, 0x11, 0x33, 0x6C]);
        let c16: Vec<u16> = data.iter().map(|d| CCITT.checksum(d)).collect();
        assert_eq!(
            c16,
            vec![0x84C0, 0xD374, 0x2023, 0xB8F9, 0xF53F, 0x0745, 0x1D0F]
        );
    }

    /// The E2E protocol's examples: data id 0x123, 8 bytes of zeros, CRC byte 0, counter
    /// in byte 1 (Profile 1 in its four data id modes, Profile 11 Both and Nibble),
    /// counters 0 and 1.
    #[test]
    fn profile_1_and_11_examples() {
        let cases = [
            (
                E2eProfile::P01,
                DataIdMode::Both,
                [0xCC, 0x00],
                [0x91, 0x01],
            ),
            (E2eProfile::P01, DataIdMode::Alt, [0xCE, 0x00], [0x02, 0x01]),
            (E2eProfile::P01, DataIdMode::Low, [0xCE, 0x00], [0x93, 0x01]),
            (
                E2eProfile::P01,
                DataIdMode::Nibble,
                [0x2A, 0x10],
                [0x77, 0x11],
            ),
            (
                E2eProfile::P11,
                DataIdMode::Both,
                [0xCC, 0x00],
                [0x91, 0x01],
            ),
            (
                E2eProfile::P11,
                DataIdMode::Nibble,
                [0x2A, 0x10],
                [0x77, 0x11],
            ),
        ];
        for (p, mode, c0, c1) in cases {
            let s = spec(p, mode);
            for (counter, want) in [(0u64, c0), (1, c1)] {
                let mut buf = [0u8; 8];
                s.protect(&mut buf, counter);
                assert_eq!(buf[..2], want, "{p:?} {mode:?} counter {counter}");
                assert!(buf[2..].iter().all(|b| *b == 0));
                assert_eq!(s.verify(&buf), Some(u8::try_from(counter).unwrap()));
            }
        }
    }

    /// Profile 5: data id 0x1234, 8 bytes, header at 0 (the short example) and a 16-byte
    /// payload with the header at byte 8 (the long one).
    #[test]
    fn profile_5_examples() {
        let mut s = spec(E2eProfile::P05, DataIdMode::Both);
        s.data_id = 0x1234;
        let mut buf = [0u8; 8];
        s.protect(&mut buf, 0);
        assert_eq!(buf, [0x1C, 0xCA, 0x00, 0, 0, 0, 0, 0]);
        s.protect(&mut buf, 1);
        assert_eq!(buf, [0xCF, 0x8D, 0x01, 0, 0, 0, 0, 0]);
        s.offset = 8;
        let mut long = [0u8; 16];
        s.protect(&mut long, 0);
        assert_eq!(long[8..11], [0x28, 0x91, 0x00]);
        s.protect(&mut long, 1);
        assert_eq!(long[8..11], [0xFB, 0xD6, 0x01]);
        assert_eq!(s.verify(&long), Some(1));
        long[12] ^= 1;
        assert_eq!(s.verify(&long), None);
    }

    /// Profile 2: data ids all 0 over zeros (counter 0 and 1), and ids 0..15 over
    /// 0, 1, ..., 7 (counter 2).
    #[test]
    fn profile_2_examples() {
        let s = spec(E2eProfile::P02, DataIdMode::Both);
        let mut buf = [0u8; 8];
        s.protect(&mut buf, 0);
        assert_eq!(buf[..2], [0x21, 0x00]);
        s.protect(&mut buf, 1);
        assert_eq!(buf[..2], [0x45, 0x01]);
        let mut s = s;
        s.data_id_list = core::array::from_fn(|i| u8::try_from(i).unwrap());
        let mut buf: [u8; 8] = core::array::from_fn(|i| u8::try_from(i).unwrap());
        s.protect(&mut buf, 2);
        assert_eq!(buf, [0xBC, 0x02, 2, 3, 4, 5, 6, 7]);
    }

    /// The check: ok, repeated, some lost, wrong sequence, CRC error, wrap-around, and
    /// timeouts between frames and at the end.
    #[test]
    fn check_classifies_every_frame() {
        let s = spec(E2eProfile::P11, DataIdMode::Both); // counter 0..14, max delta 2
        let mut st = E2eState::new(&s);
        let frame = |c: u64| {
            let mut b = [0u8; 8];
            b[3] = 0x5A;
            s.protect(&mut b, c);
            b
        };
        let ms = 1_000_000u64;
        let seq: [(u64, u64, Status); 7] = [
            (0, 10, Status::Ok),
            (1, 20, Status::Ok),
            (1, 21, Status::Repeated),
            (3, 40, Status::OkSomeLost),
            (7, 80, Status::WrongSequence), // 40 ms after the last: a timeout
            (14, 200, Status::WrongSequence), // 120 ms without a valid frame: a timeout
            (0, 210, Status::Ok),           // 14 -> 0 wraps
        ];
        for (c, t, want) in seq {
            assert_eq!(
                st.on_frame(&s, &frame(c), t * ms, 0),
                (want, Some(u8::try_from(c).unwrap())),
                "counter {c}"
            );
        }
        let mut bad = frame(1);
        bad[5] = 1;
        assert_eq!(st.on_frame(&s, &bad, 215 * ms, 0), (Status::Error, None));
        let c = st.finish(&s, 0, 220 * ms);
        assert_eq!(
            (
                c.ok,
                c.ok_some_lost,
                c.repeated,
                c.wrong_sequence,
                c.error,
                c.timeout
            ),
            (3, 1, 1, 2, 1, 2)
        );
        // 30 ms after the last valid frame, the end is a timeout too.
        assert_eq!(st.finish(&s, 0, 240 * ms).timeout, 3);
        assert_eq!(c.profile, "P11");
        assert_eq!(c.timeout_us, 20_000);
        // Nothing ever received: one timeout.
        let none = E2eState::new(&s).finish(&s, 0, 100 * ms);
        assert_eq!(none.timeout, 1);
    }

    #[test]
    fn nibble_mode_checks_the_data_id_nibble() {
        let s = spec(E2eProfile::P01, DataIdMode::Nibble);
        let mut b = [0u8; 8];
        s.protect(&mut b, 4);
        assert_eq!(s.verify(&b), Some(4));
        let other = E2eSpec {
            data_id: 0x223,
            ..s.clone()
        };
        // Same low byte, so the CRC matches; the nibble tells them apart.
        assert_eq!(other.verify(&b), None);
    }
}
