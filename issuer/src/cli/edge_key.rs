//! `issuer keys new-edge-key`: the edge's assertion keys, the JWK set (private parts included) of
//! the Worker secret `ASSERTION_KEYS`. The edge signs with the first key and publishes all of them
//! at `/_portcullis/jwks.json`, so a rotation is three changes of the set, each put with
//! `wrangler secret put ASSERTION_KEYS`: add a key (published, not signing), promote it once the
//! origins have had time to see it, drop the old one.
//!
//! Needs no configuration, database or KEK: the set goes from the input to stdout, the only place
//! a private part is written (stderr names `kid`s only). Every key read back must be a P-256 key
//! whose `d` matches its `x` and `y`, and it is printed again in the form the edge reads.

use super::EdgeKeyArgs;
use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwks::PublicKey;
use jwks::assertion::MAX_ASSERTION_KEYS;
use jwt_simple::algorithms::{ECDSAP256PublicKeyLike as _, ES256KeyPair};
use serde::{Deserialize, Serialize};
use std::io::{Read as _, Write as _};
use std::path::Path;
use zeroize::{Zeroize as _, Zeroizing};

/// A private P-256 JWK, as the edge reads it. No `Debug`: it holds `d`, which is wiped on drop.
#[derive(Serialize, Deserialize)]
struct EdgeJwk {
    kty: String,
    crv: String,
    x: String,
    y: String,
    d: String,
    kid: String,
}

impl Drop for EdgeJwk {
    fn drop(&mut self) {
        self.d.zeroize();
    }
}

impl EdgeJwk {
    /// A new random key, its `kid` the RFC 7638 thumbprint.
    fn generate() -> anyhow::Result<Self> {
        let pair = ES256KeyPair::generate();
        let d = Zeroizing::new(pair.to_bytes());
        let public = PublicKey::from_sec1(&pair.public_key().public_key().to_bytes_uncompressed())
            .context("the new key's public half")?;
        Ok(Self {
            kty: "EC".to_owned(),
            crv: "P-256".to_owned(),
            x: URL_SAFE_NO_PAD.encode(public.x()),
            y: URL_SAFE_NO_PAD.encode(public.y()),
            d: URL_SAFE_NO_PAD.encode(&*d),
            kid: public.thumbprint().to_owned(),
        })
    }

    /// Checks a key read back: P-256, a `kid`, and a `d` whose public key is `x`, `y`.
    fn check(&self, index: usize) -> anyhow::Result<()> {
        ensure!(self.kty == "EC" && self.crv == "P-256", "key {index}: not an EC P-256 key");
        ensure!(!self.kid.is_empty(), "key {index}: an empty kid");
        let d = Zeroizing::new(URL_SAFE_NO_PAD.decode(&self.d).unwrap_or_default());
        let pair = ES256KeyPair::from_bytes(&d)
            .map_err(|_| anyhow::anyhow!("key {index} ({}): d is not a P-256 private key", self.kid))?;
        let public = pair.public_key().public_key().to_bytes_uncompressed();
        let (x, y) = public.get(1..).map_or((&[][..], &[][..]), |point| point.split_at(32));
        ensure!(
            URL_SAFE_NO_PAD.encode(x) == self.x && URL_SAFE_NO_PAD.encode(y) == self.y,
            "key {index} ({}): d does not belong to x and y",
            self.kid
        );
        Ok(())
    }
}

/// `{"keys": [...]}`, the first key signing.
#[derive(Serialize, Deserialize)]
struct EdgeKeySet {
    keys: Vec<EdgeJwk>,
}

impl EdgeKeySet {
    /// Parses and checks a set: 1 to [`MAX_ASSERTION_KEYS`] good keys with distinct `kid`s. Errors
    /// name keys by position and `kid`, never repeat a private part.
    fn parse(text: &str) -> anyhow::Result<Self> {
        let set: Self = serde_json::from_str(text).map_err(|error| {
            anyhow::anyhow!(
                "not an edge key set ({{\"keys\":[{{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\",\"y\",\"d\",\"kid\"}}]}}): line {} column {}",
                error.line(),
                error.column()
            )
        })?;
        ensure!(
            (1..=MAX_ASSERTION_KEYS).contains(&set.keys.len()),
            "the set holds {} keys; the edge takes 1 to {MAX_ASSERTION_KEYS}",
            set.keys.len()
        );
        for (index, key) in set.keys.iter().enumerate() {
            key.check(index)?;
            if set.keys[..index].iter().any(|other| other.kid == key.kid) {
                bail!("key {index}: the kid {} is used twice", key.kid);
            }
        }
        Ok(set)
    }

    fn position(&self, kid: &str) -> anyhow::Result<usize> {
        let kids: Vec<&str> = self.keys.iter().map(|key| key.kid.as_str()).collect();
        self.keys.iter().position(|key| key.kid == kid).with_context(|| format!("no key {kid} in the set {kids:?}"))
    }

    fn kids(&self) -> String {
        self.keys.iter().map(|key| key.kid.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// What the command does to the set.
enum Change<'a> {
    /// A set of one new key.
    New,
    /// A new key appended to the set.
    Add(EdgeKeySet),
    /// The key moved first: it signs.
    Promote(EdgeKeySet, &'a str),
    /// The key removed.
    Drop(EdgeKeySet, &'a str),
}

/// The changed set, and a line for stderr about it (`kid`s only).
fn apply(change: Change<'_>) -> anyhow::Result<(EdgeKeySet, String)> {
    match change {
        Change::New => {
            let key = EdgeJwk::generate()?;
            let note = format!("a new edge key set, signing with {}", key.kid);
            Ok((EdgeKeySet { keys: vec![key] }, note))
        }
        Change::Add(mut set) => {
            ensure!(
                set.keys.len() < MAX_ASSERTION_KEYS,
                "the set already holds {MAX_ASSERTION_KEYS} keys ({}): drop one first",
                set.kids()
            );
            let key = EdgeJwk::generate()?;
            let note = format!(
                "added {} (published, not signing; promote it once origins have refetched the edge's JWKS, after at least 5 minutes)",
                key.kid
            );
            set.keys.push(key);
            Ok((set, note))
        }
        Change::Promote(mut set, kid) => {
            let index = set.position(kid)?;
            let key = set.keys.remove(index);
            set.keys.insert(0, key);
            Ok((set, format!("{kid} signs from now on")))
        }
        Change::Drop(mut set, kid) => {
            let index = set.position(kid)?;
            ensure!(set.keys.len() > 1, "{kid} is the only key: the edge needs one to sign");
            ensure!(index != 0, "{kid} signs: promote another key first");
            set.keys.remove(index);
            let note = format!("dropped {kid}");
            Ok((set, note))
        }
    }
}

/// Reads a set from `path`, or from stdin for `-`.
fn read_set(path: &Path) -> anyhow::Result<EdgeKeySet> {
    let mut text = Zeroizing::new(String::new());
    if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).context("cannot read the key set from stdin")?;
    } else {
        let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        file.read_to_string(&mut text).with_context(|| format!("cannot read {}", path.display()))?;
    }
    let shown = if path == Path::new("-") { "stdin".to_owned() } else { path.display().to_string() };
    EdgeKeySet::parse(&text).with_context(|| format!("the key set in {shown}"))
}

/// Runs the command: the set on stdout as one JSON line, a note on stderr.
pub(crate) fn run(args: &EdgeKeyArgs) -> anyhow::Result<()> {
    let change = match (&args.add_to, &args.input, &args.promote, &args.drop) {
        (None, None, None, None) => Change::New,
        (Some(path), None, None, None) => Change::Add(read_set(path)?),
        (None, Some(path), Some(kid), None) => Change::Promote(read_set(path)?, kid),
        (None, Some(path), None, Some(kid)) => Change::Drop(read_set(path)?, kid),
        // clap refuses the other combinations.
        _ => bail!("use --add-to FILE, --promote KID --in FILE, --drop KID --in FILE, or none"),
    };
    let (set, note) = apply(change)?;
    let mut line = Zeroizing::new(serde_json::to_string(&set)?);
    line.push('\n');
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(line.as_bytes()).and_then(|()| stdout.flush()).context("cannot write the key set to stdout")?;
    eprintln!("issuer: {note}; keys: {}", set.kids());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_of(count: usize) -> EdgeKeySet {
        EdgeKeySet { keys: (0..count).map(|_| EdgeJwk::generate().expect("a key")).collect() }
    }

    fn round_trip(set: &EdgeKeySet) -> EdgeKeySet {
        EdgeKeySet::parse(&serde_json::to_string(set).expect("JSON")).expect("reads back")
    }

    #[test]
    fn a_new_key_is_a_checked_p256_key_named_by_its_thumbprint() {
        let (set, _) = apply(Change::New).expect("a set");
        let again = round_trip(&set);
        let key = &again.keys[0];
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": key.x, "y": key.y});
        let public = PublicKey::from_jwk(&serde_json::from_value(jwk).expect("JWK")).expect("a P-256 key");
        assert_eq!(key.kid, public.thumbprint());
        assert_eq!(key.d.len(), 43, "32 bytes, base64url");
        let members: Vec<String> = serde_json::to_value(&again.keys[0])
            .expect("JSON")
            .as_object()
            .map(|object| object.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(members, ["crv", "d", "kid", "kty", "x", "y"]);
    }

    #[test]
    fn add_promote_and_drop() {
        let set = set_of(1);
        let first = set.keys[0].kid.clone();
        let (set, _) = apply(Change::Add(round_trip(&set))).expect("added");
        let second = set.keys[1].kid.clone();
        assert_eq!(set.keys[0].kid, first, "the new key is appended: it does not sign yet");
        let (set, _) = apply(Change::Promote(round_trip(&set), &second)).expect("promoted");
        assert_eq!((set.keys[0].kid.as_str(), set.keys[1].kid.as_str()), (second.as_str(), first.as_str()));
        let refused = apply(Change::Drop(round_trip(&set), &second)).err().map(|error| error.to_string());
        assert!(refused.is_some_and(|message| message.contains("promote another key first")));
        let (set, _) = apply(Change::Drop(round_trip(&set), &first)).expect("dropped");
        assert_eq!(set.keys.len(), 1);
        let last = apply(Change::Drop(round_trip(&set), &second)).err().map(|error| error.to_string());
        assert!(last.is_some_and(|message| message.contains("the only key")), "never the last key");
        assert!(apply(Change::Promote(round_trip(&set), "nope")).is_err(), "an unknown kid");
        assert!(apply(Change::Add(set_of(MAX_ASSERTION_KEYS))).is_err(), "at most four keys");
    }

    #[test]
    fn a_set_read_back_is_checked() {
        let good = serde_json::to_value(set_of(2)).expect("JSON");
        let refused = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut set = good.clone();
            edit(&mut set);
            EdgeKeySet::parse(&set.to_string()).err().map(|error| error.to_string()).unwrap_or_default()
        };
        assert!(EdgeKeySet::parse(&good.to_string()).is_ok());
        let d = good["keys"][1]["d"].clone();
        let message = refused(&|set| set["keys"][0]["d"] = d.clone());
        assert!(message.contains("does not belong"), "{message}");
        assert!(!message.contains(d.as_str().unwrap_or("-")), "no private part in an error");
        let kid = good["keys"][0]["kid"].clone();
        assert!(refused(&|set| set["keys"][1]["kid"] = kid.clone()).contains("used twice"));
        assert!(refused(&|set| set["keys"][0]["crv"] = "P-384".into()).contains("P-256"));
        assert!(refused(&|set| set["keys"][0]["d"] = "AAAA".into()).contains("not a P-256 private key"));
        assert!(refused(&|set| set["keys"] = serde_json::json!([])).contains("1 to 4"));
        let message = refused(&|set| {
            if let Some(key) = set["keys"][0].as_object_mut() {
                key.remove("kid");
            }
        });
        assert!(message.contains("not an edge key set"), "{message}");
    }
}
