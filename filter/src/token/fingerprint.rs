//! A non-reversible fingerprint of everything that defines a token family.
//!
//! The state in shared data records the fingerprint of the configuration its
//! refresh token came from. A VM whose configuration has another fingerprint
//! knows the operator changed something (a new refresh token, another client,
//! other scopes) and starts a fresh family; the secrets themselves are never
//! stored for that comparison, only a SHA-256 over them.
//!
//! SHA-256 is written out here (FIPS 180-4) rather than taken from a crate: it runs once per
//! configuration over a few hundred bytes, so a plain loop does, and the unrolled rounds of a
//! general-purpose implementation would cost the binary several kilobytes.

use super::config::OAuth2Config;
use super::endpoint::Client;

/// Hex SHA-256 (first 128 bits) over the grant, the endpoint, the client and its secrets.
pub fn fingerprint(config: &OAuth2Config, client: &Client) -> String {
    let mut input = Vec::new();
    let mut field = |name: &str, value: &[u8]| {
        // Length-prefixed fields: no two different configurations hash the same input.
        for part in [name.as_bytes(), value] {
            input.extend_from_slice(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_le_bytes());
            input.extend_from_slice(part);
        }
    };
    field("domain", b"credential_filter.oauth2.v1");
    field("grant", config.grant.name().as_bytes());
    field("cluster", config.endpoint.cluster.as_bytes());
    field("authority", config.endpoint.authority.as_bytes());
    field("path", config.endpoint.path.as_bytes());
    field("client_id", client.client_id.as_bytes());
    if let Some(secret) = &client.client_secret {
        field("client_secret", secret.expose().as_bytes());
    }
    if let Some(token) = &client.refresh_token {
        field("refresh_token", token.expose().as_bytes());
    }
    for scope in &config.scopes {
        field("scope", scope.as_bytes());
    }
    for (name, value) in &config.extra_params {
        field("param", name.as_bytes());
        field("value", value.as_bytes());
    }
    let mut hex = String::with_capacity(32);
    for byte in sha256(&input).iter().take(16) {
        for nibble in [byte >> 4, byte & 0xf] {
            hex.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
    hex
}

/// The SHA-256 round constants.
const K: [u32; 64] = [
    0x428a_2f98,
    0x7137_4491,
    0xb5c0_fbcf,
    0xe9b5_dba5,
    0x3956_c25b,
    0x59f1_11f1,
    0x923f_82a4,
    0xab1c_5ed5,
    0xd807_aa98,
    0x1283_5b01,
    0x2431_85be,
    0x550c_7dc3,
    0x72be_5d74,
    0x80de_b1fe,
    0x9bdc_06a7,
    0xc19b_f174,
    0xe49b_69c1,
    0xefbe_4786,
    0x0fc1_9dc6,
    0x240c_a1cc,
    0x2de9_2c6f,
    0x4a74_84aa,
    0x5cb0_a9dc,
    0x76f9_88da,
    0x983e_5152,
    0xa831_c66d,
    0xb003_27c8,
    0xbf59_7fc7,
    0xc6e0_0bf3,
    0xd5a7_9147,
    0x06ca_6351,
    0x1429_2967,
    0x27b7_0a85,
    0x2e1b_2138,
    0x4d2c_6dfc,
    0x5338_0d13,
    0x650a_7354,
    0x766a_0abb,
    0x81c2_c92e,
    0x9272_2c85,
    0xa2bf_e8a1,
    0xa81a_664b,
    0xc24b_8b70,
    0xc76c_51a3,
    0xd192_e819,
    0xd699_0624,
    0xf40e_3585,
    0x106a_a070,
    0x19a4_c116,
    0x1e37_6c08,
    0x2748_774c,
    0x34b0_bcb5,
    0x391c_0cb3,
    0x4ed8_aa4a,
    0x5b9c_ca4f,
    0x682e_6ff3,
    0x748f_82ee,
    0x78a5_636f,
    0x84c8_7814,
    0x8cc7_0208,
    0x90be_fffa,
    0xa450_6ceb,
    0xbef9_a3f7,
    0xc671_78f2,
];

/// The SHA-256 digest of `message`.
fn sha256(message: &[u8]) -> [u8; 32] {
    let mut state: [u32; 8] = [
        0x6a09_e667,
        0xbb67_ae85,
        0x3c6e_f372,
        0xa54f_f53a,
        0x510e_527f,
        0x9b05_688c,
        0x1f83_d9ab,
        0x5be0_cd19,
    ];
    let bits = u64::try_from(message.len())
        .unwrap_or(u64::MAX)
        .wrapping_mul(8);
    let mut padded = message.to_vec();
    padded.push(0x80);
    while padded.len() % 64 != 56 {
        padded.push(0);
    }
    padded.extend_from_slice(&bits.to_be_bytes());
    for block in padded.chunks_exact(64) {
        compress(&mut state, block);
    }
    let mut digest = [0; 32];
    for (out, word) in digest.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&word.to_be_bytes());
    }
    digest
}

/// One 64-byte block into `state`. The message schedule lives in a ring of 16 words: word `t` is
/// computed where word `t - 16` was.
// Out of line: inlined into the padding loop it cost more than the call.
#[inline(never)]
fn compress(state: &mut [u32; 8], block: &[u8]) {
    let mut schedule = [0u32; 16];
    for (word, bytes) in schedule.iter_mut().zip(block.chunks_exact(4)) {
        *word = bytes
            .iter()
            .fold(0, |word, byte| (word << 8) | u32::from(*byte));
    }
    let mut working = *state;
    for (round, constant) in K.iter().enumerate() {
        if round >= 16 {
            let back15 = schedule[(round + 1) & 15];
            let back2 = schedule[(round + 14) & 15];
            let sigma0 = back15.rotate_right(7) ^ back15.rotate_right(18) ^ (back15 >> 3);
            let sigma1 = back2.rotate_right(17) ^ back2.rotate_right(19) ^ (back2 >> 10);
            schedule[round & 15] = schedule[round & 15]
                .wrapping_add(sigma0)
                .wrapping_add(schedule[(round + 9) & 15])
                .wrapping_add(sigma1);
        }
        let [a, b, c, d, e, f, g, h] = working;
        let choose = (e & f) ^ (!e & g);
        let t1 = h
            .wrapping_add(e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25))
            .wrapping_add(choose)
            .wrapping_add(*constant)
            .wrapping_add(schedule[round & 15]);
        let majority = (a & b) ^ (a & c) ^ (b & c);
        let t2 =
            (a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22)).wrapping_add(majority);
        working = [t1.wrapping_add(t2), a, b, c, d.wrapping_add(t1), e, f, g];
    }
    for (word, add) in state.iter_mut().zip(working) {
        *word = word.wrapping_add(add);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::json::from_serde;
    use crate::secret::Secret;
    use serde_json::json;
    use sha2::Digest;

    #[test]
    fn fingerprint_follows_the_refresh_token_and_hides_it() {
        let config = crate::token::config::parse(&from_serde(&json!({
            "token_endpoint": {"cluster": "oauth", "authority": "a", "path": "/t"},
            "grant_type": "refresh_token", "client_id": "c", "refresh_token": {"env": "RT"}
        })))
        .unwrap();
        let client = |token: &str| Client {
            client_id: "c".into(),
            client_secret: None,
            refresh_token: Some(Secret::new(token)),
        };
        let first = fingerprint(&config, &client("rt-1"));
        assert_eq!(first.len(), 32);
        assert_eq!(first, fingerprint(&config, &client("rt-1")));
        assert_ne!(first, fingerprint(&config, &client("rt-2")));
        assert!(!first.contains("rt-1"));
        let mut scoped = config.clone();
        scoped.scopes = vec!["x".into()];
        assert_ne!(first, fingerprint(&scoped, &client("rt-1")));
    }

    #[test]
    fn fingerprint_is_stable_across_releases() {
        // VMs of different releases must agree on the fingerprint of one configuration.
        let config = crate::token::config::parse(&from_serde(&json!({
            "token_endpoint": {"cluster": "oauth", "authority": "a", "path": "/t"},
            "grant_type": "refresh_token", "client_id": "c",
            "client_secret": {"env": "CS"}, "refresh_token": {"env": "RT"},
            "scopes": ["x", "y"], "extra_params": {"audience": "api"}
        })))
        .unwrap();
        let client = Client {
            client_id: "c".into(),
            client_secret: Some(Secret::new("s")),
            refresh_token: Some(Secret::new("rt-1")),
        };
        assert_eq!(
            fingerprint(&config, &client),
            "828095cc440388690eabee46fea60b84"
        );
    }

    #[test]
    fn sha256_matches_the_published_vectors_and_an_independent_implementation() {
        let hex = |digest: [u8; 32]| -> String {
            digest.iter().map(|byte| format!("{byte:02x}")).collect()
        };
        assert_eq!(
            hex(sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        // Every padding case: lengths around each block boundary, bytes of every value.
        for length in 0..300 {
            let message: Vec<u8> = (0..length).map(|i| (i * 7 + length) as u8).collect();
            let expected: [u8; 32] = sha2::Sha256::digest(&message).into();
            assert_eq!(sha256(&message), expected, "length {length}");
        }
    }
}
