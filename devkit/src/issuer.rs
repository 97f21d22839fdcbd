//! A small OIDC-style issuer for local runs and tests: discovery, JWKS, RS256 tokens.
//! The API verifies its tokens with exactly the production code path (HTTP JWKS fetch included).
//! It can rotate its key and counts JWKS fetches, so tests can prove the cache rules.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::DevResult;

pub const DEFAULT_AUDIENCE: &str = "analytics-dashboard";

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    n: String,
    e: String,
    /// SubjectPublicKeyInfo PEM: what an attacker would use as an HS256 secret.
    public_pem: String,
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

impl SigningKey {
    fn generate() -> DevResult<Self> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| "RSA key generation failed")?;
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
            .map_err(|_| "PKCS#8 export failed")?;
        let encoding = EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes())?;
        let public = pair.public_key();
        let spki = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(public)
            .map_err(|_| "public key export failed")?;
        Ok(Self {
            kid: uuid::Uuid::new_v4().simple().to_string()[..16].to_string(),
            encoding,
            n: URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            e: URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
            public_pem: pem("PUBLIC KEY", spki.as_ref()),
        })
    }

    fn jwk(&self) -> Value {
        json!({ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": self.n, "e": self.e })
    }
}

struct IssuerState {
    issuer: String,
    audience: String,
    /// Published keys; the last one signs.
    keys: Mutex<Vec<SigningKey>>,
    jwks_fetches: AtomicUsize,
    /// When set, `/jwks` answers 503 (an identity provider outage).
    jwks_down: std::sync::atomic::AtomicBool,
}

#[derive(Clone)]
pub struct DevIssuer {
    state: Arc<IssuerState>,
    port: u16,
}

/// Claims of a token for a user of a tenant.
pub struct UserToken<'a> {
    pub sub: &'a str,
    pub tenant: Option<&'a str>,
    pub roles: &'a [&'a str],
    pub ttl_secs: i64,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

impl DevIssuer {
    /// Serves the issuer on `127.0.0.1:port` (0: any free port) until the runtime ends.
    pub async fn start(port: u16, audience: &str) -> DevResult<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(IssuerState {
            // As real issuers do, the issuer is a host name, not an address.
            issuer: format!("http://localhost:{port}"),
            audience: audience.to_string(),
            keys: Mutex::new(vec![SigningKey::generate()?]),
            jwks_fetches: AtomicUsize::new(0),
            jwks_down: std::sync::atomic::AtomicBool::new(false),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/dev/token", get(dev_token))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { state, port })
    }

    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }
    pub fn audience(&self) -> &str {
        &self.state.audience
    }
    pub fn jwks_url(&self) -> String {
        format!("http://127.0.0.1:{}/jwks", self.port)
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }
    pub fn current_kid(&self) -> String {
        self.state
            .keys
            .lock()
            .ok()
            .and_then(|k| k.last().map(|k| k.kid.clone()))
            .unwrap_or_default()
    }

    pub fn public_key_pem(&self) -> String {
        self.state
            .keys
            .lock()
            .ok()
            .and_then(|k| k.last().map(|k| k.public_pem.clone()))
            .unwrap_or_default()
    }

    /// Simulates an outage of the JWKS endpoint.
    pub fn set_jwks_down(&self, down: bool) {
        self.state.jwks_down.store(down, Ordering::SeqCst);
    }

    /// Replaces the published key with a new one (old tokens stop verifying after refetch).
    pub fn rotate(&self) -> DevResult<()> {
        let fresh = SigningKey::generate()?;
        let mut keys = self.state.keys.lock().map_err(|_| "poisoned")?;
        *keys = vec![fresh];
        Ok(())
    }

    /// The standard claims for a user token.
    pub fn claims(&self, user: &UserToken<'_>) -> Value {
        let now = now();
        let mut claims = json!({
            "iss": self.state.issuer,
            "aud": self.state.audience,
            "sub": user.sub,
            "iat": now,
            "nbf": now,
            "exp": now + user.ttl_secs,
            "roles": user.roles,
        });
        if let Some(tenant) = user.tenant {
            claims["tenant_id"] = json!(tenant);
        }
        claims
    }

    pub fn token(&self, sub: &str, tenant: &str, roles: &[&str]) -> String {
        self.sign(&self.claims(&UserToken {
            sub,
            tenant: Some(tenant),
            roles,
            ttl_secs: 3600,
        }))
    }

    /// Signs arbitrary claims with the current key (RS256, its kid).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.current_kid());
        self.sign_with_header(&header, claims)
    }

    /// Signs with a caller-built header (for attack tests: `crit`, `jku`, a foreign `kid`…).
    pub fn sign_with_header(&self, header: &Header, claims: &Value) -> String {
        let keys = match self.state.keys.lock() {
            Ok(keys) => keys,
            Err(poisoned) => poisoned.into_inner(),
        };
        keys.last()
            .and_then(|key| jsonwebtoken::encode(header, claims, &key.encoding).ok())
            .unwrap_or_default()
    }
}

/// Signs with a key that no JWKS publishes (an attacker's, or a future rotation's).
pub fn sign_with_unpublished_key(claims: &Value, kid: &str) -> DevResult<String> {
    let key = SigningKey::generate()?;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    Ok(jsonwebtoken::encode(&header, claims, &key.encoding)?)
}

async fn discovery(State(state): State<Arc<IssuerState>>) -> Json<Value> {
    let base = &state.issuer;
    Json(json!({
        "issuer": base,
        "jwks_uri": format!("{base}/jwks"),
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
    }))
}

async fn jwks(State(state): State<Arc<IssuerState>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if state.jwks_down.load(Ordering::SeqCst) {
        return http::StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let keys: Vec<Value> = state
        .keys
        .lock()
        .map(|keys| keys.iter().map(SigningKey::jwk).collect())
        .unwrap_or_default();
    Json(json!({ "keys": keys })).into_response()
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    sub: String,
    tenant: String,
    #[serde(default)]
    roles: String,
}

/// `GET /dev/token?sub=&tenant=&roles=a,b`: a convenience for local runs and load tests.
async fn dev_token(
    State(state): State<Arc<IssuerState>>,
    Query(q): Query<TokenQuery>,
) -> Json<Value> {
    let issuer = DevIssuer { state, port: 0 };
    let roles: Vec<&str> = q.roles.split(',').filter(|r| !r.is_empty()).collect();
    Json(json!({ "access_token": issuer.token(&q.sub, &q.tenant, &roles), "token_type": "Bearer" }))
}
