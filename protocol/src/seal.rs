//! Sealing for confidential jobs: the keys a job secret gives (HKDF-SHA256), AEAD envelopes
//! bound to where they belong (AES-256-GCM), and the job secret wrapped to an enclave's fresh
//! X25519 key (HPKE-style: ephemeral X25519, HKDF, AEAD). All from `ring`.
//!
//! Keys. The customer makes one 32-byte job secret. Every key is derived from it for one use:
//! `HKDF-SHA256(salt = "conclave/v1/seal", ikm = secret, info = "conclave/v1/<purpose>/<job>/<n>")`
//! with the purpose `shard` (n = the shard's index), `update` (n = the round), `checkpoint`
//! (n = the step) or `model` (the final model). A key never seals under another purpose, job or
//! index, and the same purpose, job and index are also in every envelope's associated data, so
//! a ciphertext moved to another place fails to open.
//!
//! Envelope (all integers little-endian):
//!
//! ```text
//! "CSE1" | kind u8 | alg u8 (1 = AES-256-GCM) | index u64 | nonce [12] | ciphertext and tag
//! ```
//!
//! associated data = the header (everything before the ciphertext) ‖ the job id. Nonces are
//! random (96 bits from the system RNG) under keys that seal a handful of messages each (one
//! shard; one operator's update and receipt of a round; one checkpoint), far below the birthday
//! bound.
//!
//! Wrapped secret:
//!
//! ```text
//! "CSW1" | ephemeral X25519 public key [32] | ciphertext of the secret and tag [48]
//! ```
//!
//! key = `HKDF-SHA256(salt = ephemeral ‖ recipient, ikm = X25519(ephemeral, recipient),
//! info = "conclave/v1/wrap" ‖ context)`, nonce 0 (the key is used once), associated data =
//! the context (the job id and the recipient's evidence hash: a wrapped secret opens only for
//! the request it answers). The recipient's private key is ring's single-use ephemeral key:
//! made for one request, consumed by the one unwrap.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::hkdf::{HKDF_SHA256, KeyType, Salt};
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes of a job secret.
pub const SECRET_LEN: usize = 32;
/// Bytes of the AEAD tag.
pub const TAG_LEN: usize = 16;
/// Bytes of an envelope's header.
pub const HEADER_LEN: usize = 4 + 1 + 1 + 8 + NONCE_LEN;
/// Bytes of a wrapped secret.
pub const WRAPPED_LEN: usize = 4 + 32 + SECRET_LEN + TAG_LEN;
/// The largest plaintext sealed in one envelope (a checkpoint of a large model).
pub const MAX_PLAINTEXT: usize = 8 << 30;

const ENVELOPE_MAGIC: &[u8; 4] = b"CSE1";
const WRAPPED_MAGIC: &[u8; 4] = b"CSW1";
const ALG_AES_256_GCM: u8 = 1;
const SALT: &[u8] = b"conclave/v1/seal";

/// Why something does not seal or open. Every refusal names its cause; a failed open says
/// nothing about the plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not one of our envelopes.
    #[error("not a sealed envelope: {0}")]
    Malformed(String),
    /// The envelope is for another kind, index or algorithm than asked.
    #[error("the envelope is a {found}, not the {wanted} asked for")]
    WrongPlace {
        /// What was asked for.
        wanted: String,
        /// What the header says.
        found: String,
    },
    /// The AEAD refused: a changed byte, another key, or another job.
    #[error(
        "the ciphertext does not open under this job's key (changed, or sealed for another job or place)"
    )]
    Refused,
    /// Too large to seal.
    #[error("{len} bytes is more than the {max} sealed in one envelope")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The system's random generator or key agreement failed.
    #[error("sealing failed: {0}")]
    Crypto(&'static str),
}

/// What an envelope holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A dataset shard (index = the shard's).
    Shard,
    /// An operator's update for a round (index = the round).
    Update,
    /// A checkpoint's weights (index = the step).
    Checkpoint,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Shard => 1,
            Kind::Update => 2,
            Kind::Checkpoint => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Kind::Shard,
            2 => Kind::Update,
            3 => Kind::Checkpoint,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Shard => "shard",
            Kind::Update => "update",
            Kind::Checkpoint => "checkpoint",
        }
    }
}

/// A job's secret: every key of the job derives from it. Zeroed when dropped.
pub struct JobSecret([u8; SECRET_LEN]);

impl JobSecret {
    /// A fresh secret from the system's random generator.
    pub fn generate() -> Result<Self, SealError> {
        let mut s = [0u8; SECRET_LEN];
        SystemRandom::new()
            .fill(&mut s)
            .map_err(|_| SealError::Crypto("the system random generator failed"))?;
        Ok(JobSecret(s))
    }

    /// The secret from its bytes (a key file, an unwrapped release).
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        JobSecret(bytes)
    }

    /// The secret's bytes (to write the customer's key file, or to wrap).
    pub fn expose(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// A public commitment to the secret for job `job`: `HKDF-SHA256(salt = "conclave/v1/seal",
    /// ikm = secret, info = "conclave/v1/key-check/<job>")`. The job document names it, so an
    /// enclave refuses a secret its host made up (under which the host could read what the
    /// enclave seals); it reveals nothing of the secret.
    pub fn key_check(&self, job: &[u8; 32]) -> Result<[u8; 32], SealError> {
        let info = format!("conclave/v1/key-check/{}", hex::encode(job));
        let prk = Salt::new(HKDF_SHA256, SALT).extract(&self.0);
        let info = [info.as_bytes()];
        let okm = prk
            .expand(&info, AeadKeyLen)
            .map_err(|_| SealError::Crypto("HKDF expansion failed"))?;
        let mut out = [0u8; 32];
        okm.fill(&mut out)
            .map_err(|_| SealError::Crypto("HKDF expansion failed"))?;
        Ok(out)
    }

    /// The AEAD key for `kind` at `index` of job `job`.
    fn key(&self, job: &[u8; 32], kind: Kind, index: u64) -> Result<LessSafeKey, SealError> {
        let info = format!("conclave/v1/{}/{}/{index}", kind.label(), hex::encode(job));
        aead_key(&self.0, SALT, &[info.as_bytes()])
    }

    /// Seals `plaintext` as the `kind` at `index` of job `job`.
    pub fn seal(
        &self,
        job: &[u8; 32],
        kind: Kind,
        index: u64,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(SealError::TooLarge {
                len: plaintext.len(),
                max: MAX_PLAINTEXT,
            });
        }
        let key = self.key(job, kind, index)?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Crypto("the system random generator failed"))?;
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(ENVELOPE_MAGIC);
        out.push(kind.byte());
        out.push(ALG_AES_256_GCM);
        out.extend_from_slice(&index.to_le_bytes());
        out.extend_from_slice(&nonce);
        let mut aad = out.clone();
        aad.extend_from_slice(job);
        // Sealed in place after the header: one copy of the plaintext, no reallocation.
        out.extend_from_slice(plaintext);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut out[HEADER_LEN..],
            )
            .map_err(|_| SealError::Crypto("AES-256-GCM sealing failed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens an envelope that must be the `kind` at `index` of job `job`.
    pub fn open(
        &self,
        job: &[u8; 32],
        kind: Kind,
        index: u64,
        envelope: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let h = Header::parse(envelope)?;
        if h.kind != kind || h.index != index {
            return Err(SealError::WrongPlace {
                wanted: format!("{} {index}", kind.label()),
                found: format!("{} {}", h.kind.label(), h.index),
            });
        }
        let key = self.key(job, kind, index)?;
        let mut aad = envelope[..HEADER_LEN].to_vec();
        aad.extend_from_slice(job);
        // One copy: opened in place, the tag cut off.
        let mut body = envelope[HEADER_LEN..].to_vec();
        let n = key
            .open_in_place(
                Nonce::assume_unique_for_key(h.nonce),
                Aad::from(&aad),
                &mut body,
            )
            .map_err(|_| SealError::Refused)?
            .len();
        body.truncate(n);
        Ok(body)
    }
}

impl Drop for JobSecret {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: a valid, aligned pointer to a byte of our own array.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// An envelope's header, read without any key (auditors and relays see it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub index: u64,
    pub nonce: [u8; NONCE_LEN],
    /// Bytes of the ciphertext without its tag (the plaintext's size: what leaks).
    pub plaintext_len: usize,
}

impl Header {
    /// Reads and checks an envelope's header.
    pub fn parse(envelope: &[u8]) -> Result<Self, SealError> {
        if envelope.len() < HEADER_LEN + TAG_LEN {
            return Err(SealError::Malformed(format!(
                "{} bytes is shorter than a header and tag ({})",
                envelope.len(),
                HEADER_LEN + TAG_LEN
            )));
        }
        if &envelope[..4] != ENVELOPE_MAGIC {
            return Err(SealError::Malformed("no CSE1 magic".into()));
        }
        let kind = Kind::from_byte(envelope[4])
            .ok_or_else(|| SealError::Malformed(format!("unknown kind {}", envelope[4])))?;
        if envelope[5] != ALG_AES_256_GCM {
            return Err(SealError::Malformed(format!(
                "unknown algorithm {}",
                envelope[5]
            )));
        }
        let index = u64::from_le_bytes(envelope[6..14].try_into().expect("8 bytes"));
        let nonce: [u8; NONCE_LEN] = envelope[14..HEADER_LEN].try_into().expect("12 bytes");
        Ok(Header {
            kind,
            index,
            nonce,
            plaintext_len: envelope.len() - HEADER_LEN - TAG_LEN,
        })
    }
}

struct AeadKeyLen;

impl KeyType for AeadKeyLen {
    fn len(&self) -> usize {
        32
    }
}

fn aead_key(ikm: &[u8], salt: &[u8], info: &[&[u8]]) -> Result<LessSafeKey, SealError> {
    let prk = Salt::new(HKDF_SHA256, salt).extract(ikm);
    let okm = prk
        .expand(info, AeadKeyLen)
        .map_err(|_| SealError::Crypto("HKDF expansion failed"))?;
    let mut key = [0u8; 32];
    okm.fill(&mut key)
        .map_err(|_| SealError::Crypto("HKDF expansion failed"))?;
    let unbound = UnboundKey::new(&AES_256_GCM, &key)
        .map_err(|_| SealError::Crypto("AES-256-GCM key setup failed"))?;
    key.fill(0);
    Ok(LessSafeKey::new(unbound))
}

/// A recipient's single-use X25519 key pair: made inside the enclave for one key request, its
/// public half bound into the evidence's report data, its private half consumed by the one
/// [`unwrap`](Recipient::unwrap).
pub struct Recipient {
    private: EphemeralPrivateKey,
    public: [u8; 32],
}

/// A fresh single-use X25519 private key and its public key.
fn x25519_pair() -> Result<(EphemeralPrivateKey, [u8; 32]), SealError> {
    let private = EphemeralPrivateKey::generate(&X25519, &SystemRandom::new())
        .map_err(|_| SealError::Crypto("X25519 key generation failed"))?;
    let public: [u8; 32] = private
        .compute_public_key()
        .map_err(|_| SealError::Crypto("X25519 public key failed"))?
        .as_ref()
        .try_into()
        .map_err(|_| SealError::Crypto("X25519 public key is not 32 bytes"))?;
    Ok((private, public))
}

impl Recipient {
    /// A fresh key pair.
    pub fn generate() -> Result<Self, SealError> {
        let (private, public) = x25519_pair()?;
        Ok(Recipient { private, public })
    }

    /// The public key to bind into the evidence and send.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// Opens a secret wrapped to this key under `context`; the private key is spent.
    pub fn unwrap(self, wrapped: &[u8], context: &[u8]) -> Result<JobSecret, SealError> {
        if wrapped.len() != WRAPPED_LEN {
            return Err(SealError::Malformed(format!(
                "a wrapped secret is {WRAPPED_LEN} bytes, not {}",
                wrapped.len()
            )));
        }
        if &wrapped[..4] != WRAPPED_MAGIC {
            return Err(SealError::Malformed("no CSW1 magic".into()));
        }
        let eph: [u8; 32] = wrapped[4..36].try_into().expect("32 bytes");
        let public = self.public;
        let key = agreement::agree_ephemeral(
            self.private,
            &UnparsedPublicKey::new(&X25519, eph),
            |shared| wrap_key(shared, &eph, &public, context),
        )
        .map_err(|_| SealError::Refused)??;
        let mut body = wrapped[36..].to_vec();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key([0; NONCE_LEN]),
                Aad::from(context),
                &mut body,
            )
            .map_err(|_| SealError::Refused)?;
        let secret: [u8; SECRET_LEN] = plain
            .try_into()
            .map_err(|_| SealError::Malformed("the secret is not 32 bytes".into()))?;
        body.fill(0);
        Ok(JobSecret(secret))
    }
}

fn wrap_key(
    shared: &[u8],
    eph: &[u8; 32],
    recipient: &[u8; 32],
    context: &[u8],
) -> Result<LessSafeKey, SealError> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph);
    salt[32..].copy_from_slice(recipient);
    aead_key(shared, &salt, &[b"conclave/v1/wrap", context])
}

/// Wraps `secret` to `recipient`'s X25519 public key under `context` (the job id and what the
/// release answers, e.g. the recipient's evidence hash).
pub fn wrap(
    secret: &JobSecret,
    recipient: &[u8; 32],
    context: &[u8],
) -> Result<Vec<u8>, SealError> {
    let (eph, eph_pub) = x25519_pair()?;
    let key =
        agreement::agree_ephemeral(eph, &UnparsedPublicKey::new(&X25519, recipient), |shared| {
            wrap_key(shared, &eph_pub, recipient, context)
        })
        .map_err(|_| SealError::Crypto("X25519 agreement failed (a low-order public key?)"))??;
    let mut body = secret.expose().to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key([0; NONCE_LEN]),
        Aad::from(context),
        &mut body,
    )
    .map_err(|_| SealError::Crypto("AES-256-GCM sealing failed"))?;
    let mut out = Vec::with_capacity(WRAPPED_LEN);
    out.extend_from_slice(WRAPPED_MAGIC);
    out.extend_from_slice(&eph_pub);
    out.extend_from_slice(&body);
    body.fill(0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: [u8; 32] = [7; 32];

    #[test]
    fn the_key_check_names_one_secret_and_one_job() {
        let s = JobSecret::generate().unwrap();
        let t = JobSecret::generate().unwrap();
        let c = s.key_check(&JOB).unwrap();
        assert_eq!(
            c,
            JobSecret::from_bytes(*s.expose()).key_check(&JOB).unwrap()
        );
        assert_ne!(c, t.key_check(&JOB).unwrap());
        assert_ne!(c, s.key_check(&[8; 32]).unwrap());
    }

    #[test]
    fn an_envelope_opens_only_in_its_place() {
        let s = JobSecret::generate().unwrap();
        let env = s.seal(&JOB, Kind::Update, 3, b"the update").unwrap();
        assert_eq!(s.open(&JOB, Kind::Update, 3, &env).unwrap(), b"the update");
        let h = Header::parse(&env).unwrap();
        assert_eq!((h.kind, h.index, h.plaintext_len), (Kind::Update, 3, 10));
        // Another round, kind, job or secret: refused.
        assert!(matches!(
            s.open(&JOB, Kind::Update, 4, &env),
            Err(SealError::WrongPlace { .. })
        ));
        assert!(matches!(
            s.open(&JOB, Kind::Checkpoint, 3, &env),
            Err(SealError::WrongPlace { .. })
        ));
        assert_eq!(
            s.open(&[8; 32], Kind::Update, 3, &env),
            Err(SealError::Refused)
        );
        let other = JobSecret::generate().unwrap();
        assert_eq!(
            other.open(&JOB, Kind::Update, 3, &env),
            Err(SealError::Refused)
        );
        // A header rewritten to another round is refused by the AEAD (the header is
        // associated data and the key is the round's).
        let mut moved = env.clone();
        moved[6] = 4;
        assert_eq!(
            s.open(&JOB, Kind::Update, 4, &moved),
            Err(SealError::Refused)
        );
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let s = JobSecret::from_bytes([1; 32]);
        let env = s.seal(&JOB, Kind::Shard, 0, &[42u8; 100]).unwrap();
        for i in 0..env.len() {
            let mut bad = env.clone();
            bad[i] ^= 0x01;
            assert!(s.open(&JOB, Kind::Shard, 0, &bad).is_err(), "byte {i}");
        }
    }

    #[test]
    fn nonces_differ_between_seals_of_the_same_bytes() {
        let s = JobSecret::from_bytes([1; 32]);
        let a = s.seal(&JOB, Kind::Shard, 0, b"x").unwrap();
        let b = s.seal(&JOB, Kind::Shard, 0, b"x").unwrap();
        assert_ne!(
            Header::parse(&a).unwrap().nonce,
            Header::parse(&b).unwrap().nonce
        );
        assert_ne!(a, b);
    }

    #[test]
    fn a_wrapped_secret_opens_for_its_recipient_and_context_only() {
        let secret = JobSecret::generate().unwrap();
        let r = Recipient::generate().unwrap();
        let w = wrap(&secret, &r.public_key(), b"job/evidence").unwrap();
        assert_eq!(w.len(), WRAPPED_LEN);
        let got = r.unwrap(&w, b"job/evidence").unwrap();
        assert_eq!(got.expose(), secret.expose());

        // Another recipient, another context, a flipped byte: refused.
        let other = Recipient::generate().unwrap();
        assert_eq!(
            other.unwrap(&w, b"job/evidence").err(),
            Some(SealError::Refused)
        );
        let r2 = Recipient::generate().unwrap();
        let w2 = wrap(&secret, &r2.public_key(), b"job/evidence").unwrap();
        assert_eq!(r2.unwrap(&w2, b"job/other").err(), Some(SealError::Refused));
        for i in [0usize, 5, 40, WRAPPED_LEN - 1] {
            let r3 = Recipient::generate().unwrap();
            let mut bad = wrap(&secret, &r3.public_key(), b"c").unwrap();
            bad[i] ^= 1;
            assert!(r3.unwrap(&bad, b"c").is_err(), "byte {i}");
        }
        // Wrong length: named.
        let r4 = Recipient::generate().unwrap();
        assert!(matches!(
            r4.unwrap(&w[..10], b"c"),
            Err(SealError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_envelopes_are_named() {
        assert!(matches!(
            Header::parse(b"short"),
            Err(SealError::Malformed(_))
        ));
        let s = JobSecret::from_bytes([1; 32]);
        let mut env = s.seal(&JOB, Kind::Shard, 0, b"x").unwrap();
        env[4] = 9;
        assert!(
            Header::parse(&env)
                .unwrap_err()
                .to_string()
                .contains("kind")
        );
        env[4] = 1;
        env[5] = 9;
        assert!(
            Header::parse(&env)
                .unwrap_err()
                .to_string()
                .contains("algorithm")
        );
        env[0] = b'X';
        assert!(
            Header::parse(&env)
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
    }
}
