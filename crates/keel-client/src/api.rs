//! A method for every route the CLI uses, so that the API's paths are written here and in
//! keel-server only (the route matrix in keel-server's tests lists them all). Records the REST
//! API serves as collections share five methods over [`Records`]; the other routes have one each.

use bytes::Bytes;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::routes::{Records, API};
use crate::{Client, ClientError, Versioned};

/// A query string (`?a=1&b=2`, or nothing) with every pair form-encoded.
fn query<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut q = form_urlencoded::Serializer::for_suffix(String::from("?"), 1);
    for (k, v) in pairs {
        q.append_pair(k.as_ref(), v.as_ref());
    }
    q.finish()
}

impl Client {
    /// The records of a kind, filtered by `filters` (`field=value` pairs the route knows).
    pub async fn list<T: DeserializeOwned, K: AsRef<str>, V: AsRef<str>>(
        &self,
        kind: Records,
        filters: &[(K, V)],
    ) -> Result<Vec<T>, ClientError> {
        self.get(&format!("{}{}", kind.collection(), query(filters))).await
    }

    /// Every record of a kind.
    pub async fn all<T: DeserializeOwned>(&self, kind: Records) -> Result<Vec<T>, ClientError> {
        self.get(&kind.collection()).await
    }

    /// One record, by its key (a destination's key has three parts).
    pub async fn show<T: DeserializeOwned>(&self, kind: Records, key: &[&str]) -> Result<T, ClientError> {
        self.get(&kind.record(key)?).await
    }

    /// One record and its version (for a guarded [`Client::replace`]).
    pub async fn show_versioned<T: DeserializeOwned>(
        &self,
        kind: Records,
        key: &[&str],
    ) -> Result<Versioned<T>, ClientError> {
        self.call(Method::GET, &kind.record(key)?, None, None).await
    }

    /// Creates a record.
    pub async fn create<T: DeserializeOwned>(&self, kind: Records, body: &Value) -> Result<T, ClientError> {
        Ok(self
            .call(Method::POST, &kind.collection(), Some(body), None)
            .await?
            .value)
    }

    /// Changes some fields of a record (PATCH), guarded by its current version.
    pub async fn update<T: DeserializeOwned>(
        &self,
        kind: Records,
        key: &[&str],
        body: &Value,
    ) -> Result<T, ClientError> {
        self.edit(Method::PATCH, &kind.record(key)?, Some(body)).await
    }

    /// Sets a record whole (PUT), guarded by its current version.
    pub async fn put<T: DeserializeOwned>(&self, kind: Records, key: &[&str], body: &Value) -> Result<T, ClientError> {
        self.edit(Method::PUT, &kind.record(key)?, Some(body)).await
    }

    /// Sets a record whole (PUT) if it is still at `version` (read with
    /// [`Client::show_versioned`]).
    pub async fn replace<T: DeserializeOwned>(
        &self,
        kind: Records,
        key: &[&str],
        body: &Value,
        version: u64,
    ) -> Result<T, ClientError> {
        Ok(self
            .call(Method::PUT, &kind.record(key)?, Some(body), Some(version))
            .await?
            .value)
    }

    /// Removes a record, guarded by its current version.
    pub async fn remove(&self, kind: Records, key: &[&str]) -> Result<Value, ClientError> {
        self.edit(Method::DELETE, &kind.record(key)?, None).await
    }

    /// Revokes an API token (tokens have no version: a revocation is never refused as stale).
    pub async fn revoke_token(&self, id: &str) -> Result<(), ClientError> {
        self.request(Method::DELETE, &Records::Tokens.record(&[id])?, None, None)
            .await?;
        Ok(())
    }

    /// Opens a session (presence): as an admin, for any machine; as a machine, for itself.
    pub async fn open_session(&self, body: &Value) -> Result<Value, ClientError> {
        Ok(self
            .call(Method::POST, crate::routes::SESSIONS, Some(body), None)
            .await?
            .value)
    }

    /// Adds machines in one commit: all or none (`errors` name each bad row). A dry run plans the
    /// same import against the live state and commits nothing.
    pub async fn import_machines(&self, rows: Vec<Value>, dry_run: bool) -> Result<Value, ClientError> {
        let body = json!({ "machines": rows, "dry_run": dry_run });
        let path = format!("{}/import", Records::Machines.collection());
        Ok(self.call(Method::POST, &path, Some(&body), None).await?.value)
    }

    /// Moves machines to free addresses of their pools (`None`: every machine outside today's
    /// pools), all in one commit or none; a dry run only says where each would go.
    pub async fn renumber_machines(&self, names: Option<&[String]>, dry_run: bool) -> Result<Value, ClientError> {
        let body = json!({ "machines": names, "dry_run": dry_run });
        let path = format!("{}/renumber", Records::Machines.collection());
        Ok(self.call(Method::POST, &path, Some(&body), None).await?.value)
    }

    /// Adds or updates users in one commit (the body of `POST /api/v1/users/import`).
    pub async fn import_users(&self, body: &Value) -> Result<Value, ClientError> {
        let path = format!("{}/import", Records::Users.collection());
        Ok(self.call(Method::POST, &path, Some(body), None).await?.value)
    }

    /// Moves `login`'s home to HFS `hfs`; with `copy`, keel's move hook copies the files first.
    pub async fn move_home(&self, login: &str, hfs: u32, copy: bool) -> Result<Value, ClientError> {
        let path = crate::routes::move_home(login)?;
        let body = json!({ "hfs": hfs, "copy": copy });
        Ok(self.call(Method::POST, &path, Some(&body), None).await?.value)
    }

    /// The change log after `since`, at most `limit` entries.
    pub async fn changes<T: DeserializeOwned>(&self, since: u64, limit: u32) -> Result<Vec<T>, ClientError> {
        let q = query(&[("since", since.to_string()), ("limit", limit.to_string())]);
        self.get(&format!("{API}/changes{q}")).await
    }

    /// The newest `limit` changes (before seq `before`, if given), newest first.
    pub async fn newest_changes<T: DeserializeOwned>(
        &self,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<T>, ClientError> {
        let mut q = vec![("order", "desc".to_owned()), ("limit", limit.to_string())];
        if let Some(b) = before {
            q.push(("before", b.to_string()));
        }
        self.get(&format!("{API}/changes{}", query(&q))).await
    }

    /// Changes a password, authenticated by the current one (a client without a token will do).
    pub async fn passwd(&self, body: &Value) -> Result<(), ClientError> {
        self.request(Method::POST, &format!("{API}/passwd"), Some(body), None)
            .await?;
        Ok(())
    }

    /// A consistent copy of the live database (SQLite bytes).
    pub async fn backup(&self) -> Result<Bytes, ClientError> {
        self.download(&format!("{API}/backup"), "backup").await
    }

    /// What is pushed where: `{"tasks": […]}`, for one facility or all.
    pub async fn propagation_status(&self, facility: Option<&str>) -> Result<Value, ClientError> {
        let filter: Vec<(&str, &str)> = facility.map(|f| ("facility", f)).into_iter().collect();
        self.get(&format!("{API}/propagation{}", query(&filter))).await
    }

    /// Plans a push of a facility's services now (`service` to narrow it).
    pub async fn propagation_force(&self, facility: &str, service: Option<&str>) -> Result<Value, ClientError> {
        let body = json!({"facility": facility, "service": service});
        let path = format!("{API}/propagation/force");
        Ok(self.call(Method::POST, &path, Some(&body), None).await?.value)
    }

    /// Blocks (or unblocks) a service of a facility, everywhere or to one destination.
    pub async fn propagation_block(
        &self,
        facility: &str,
        service: &str,
        destination: Option<&str>,
        blocked: bool,
    ) -> Result<Value, ClientError> {
        let body = json!({"facility": facility, "service": service, "destination": destination, "blocked": blocked});
        let path = format!("{API}/propagation/block");
        Ok(self.call(Method::POST, &path, Some(&body), None).await?.value)
    }

    /// The signed bundle a destination would be sent now.
    pub async fn propagation_bundle(
        &self,
        service: &str,
        facility: &str,
        destination: &str,
    ) -> Result<Bytes, ClientError> {
        let q = query(&[
            ("service", service),
            ("facility", facility),
            ("destination", destination),
        ]);
        self.download(&format!("{API}/propagation/bundle{q}"), "bundle").await
    }

    /// The whole body of a GET (`what` names it if the download is cut).
    async fn download(&self, path: &str, what: &str) -> Result<Bytes, ClientError> {
        let resp = self.request(Method::GET, path, None, None).await?;
        resp.bytes()
            .await
            .map_err(|e| ClientError::Decode(format!("the {what} download was cut: {e}")))
    }

    /// The public key destinations verify bundles with: `{"public_key": …}`.
    pub async fn propagation_key(&self) -> Result<Value, ClientError> {
        self.get(&format!("{API}/propagation/key")).await
    }
}

#[cfg(test)]
mod tests {
    use super::query;

    #[test]
    fn queries_are_form_encoded() {
        assert_eq!(query(&[("group", "a&b=c")]), "?group=a%26b%3Dc");
        assert_eq!(query::<&str, &str>(&[]), "");
    }
}
