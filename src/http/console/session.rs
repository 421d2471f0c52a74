//! Console logins: the session table (random ids → who is logged in and the session's CSRF
//! token), kept in memory (a restart logs everyone out), expiring after `ui.sessionttl` without
//! use, bounded in size. Also the cookies that carry the id and the language choice. It decides
//! nothing about permissions: it only remembers a name the configured auth accepted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "stevedore_session";
/// The language cookie's name (`en` or `zh-CN`).
pub const LANG_COOKIE: &str = "stevedore_lang";
/// At most this many sessions are kept; beyond it the least recently used goes.
const MAX_SESSIONS: usize = 10_000;

/// One session: anonymous (a visitor with a CSRF token for the login form) or a logged-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: Option<String>,
    pub csrf: String,
}

struct Entry {
    session: Session,
    last: Instant,
}

/// The session table.
pub struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
    ttl: Duration,
}

/// 256 bits from the OS's random source, hex.
pub fn random_token() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!("{}{}", a.simple(), b.simple())
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// The live session with this id (its idle time starts again).
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.map.lock().expect("session table");
        let now = Instant::now();
        match map.get_mut(id) {
            Some(e) if now.duration_since(e.last) < self.ttl => {
                e.last = now;
                Some(e.session.clone())
            }
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// A new session (a fresh id, so a login never reuses the id a visitor had before).
    pub fn create(&self, user: Option<String>) -> (String, Session) {
        let id = random_token();
        let session = Session {
            user,
            csrf: random_token(),
        };
        let mut map = self.map.lock().expect("session table");
        let now = Instant::now();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, e| now.duration_since(e.last) < self.ttl);
        }
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.last)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Entry {
                session: session.clone(),
                last: now,
            },
        );
        (id, session)
    }

    pub fn remove(&self, id: &str) {
        self.map.lock().expect("session table").remove(id);
    }

    /// Ends every session of `user` (h3's user deletion and password change call this).
    pub fn remove_user(&self, user: &str) {
        self.map
            .lock()
            .expect("session table")
            .retain(|_, e| e.session.user.as_deref() != Some(user));
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value for the session id: `HttpOnly`, `SameSite=Strict`, `Secure` over TLS,
/// scoped to `/ui`. `None` clears it.
pub fn session_cookie(id: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match id {
        Some(id) => format!("{SESSION_COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict{secure}"),
        None => {
            format!("{SESSION_COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
        }
    }
}

/// Compares two tokens in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_rotate() {
        let s = Sessions::new(Duration::from_millis(50));
        let (id, sess) = s.create(Some("alice".into()));
        assert_eq!(s.get(&id).unwrap(), sess);
        let (id2, _) = s.create(None);
        assert_ne!(id, id2);
        std::thread::sleep(Duration::from_millis(80));
        assert!(s.get(&id).is_none());
        let (id3, _) = s.create(Some("bob".into()));
        s.remove_user("bob");
        assert!(s.get(&id3).is_none());
    }

    #[test]
    fn cookies() {
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "a=1; stevedore_session=xyz".parse().unwrap(),
        );
        h.append(
            http::header::COOKIE,
            "stevedore_lang=zh-CN".parse().unwrap(),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, LANG_COOKIE), Some("zh-CN"));
        assert_eq!(cookie(&h, "b"), None);
        let c = session_cookie(Some("x"), true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!session_cookie(Some("x"), false).contains("Secure"));
        assert!(same_token("abc", "abc") && !same_token("abc", "abd") && !same_token("a", "ab"));
    }
}
