//! The `raftkv.v1.Auth` service: logging in, and the users, roles and API keys, as the REST
//! API's `/auth` routes serve them ([`crate::service::auth`]). Each method checks the caller's
//! credentials first (`Login` and `Status` are open, as over REST), decodes its message into
//! the shared handler's arguments, and encodes the answer or relays the call to the leader.

use bytes::Bytes;
use proto::pb::{self, auth_client::AuthClient};
use proto::rest::auth::{self as rest, Changed};
use tonic::{Request, Response, Status};

use super::forward::via;
use super::status::status_of;
use super::{Api, Credentials, serving};
use crate::auth::Need;
use crate::service::auth as service;

fn user(info: rest::UserInfo) -> pb::User {
    pb::User {
        username: info.username,
        role: info.role,
    }
}

fn role(info: rest::RoleInfo) -> pb::Role {
    pb::Role {
        name: info.name,
        permission: info.permission,
        prefixes: info.prefixes.into_iter().map(Bytes::from).collect(),
        builtin: info.builtin,
    }
}

fn changed(c: Changed) -> pb::AuthChangedResponse {
    pb::AuthChangedResponse { name: c.name }
}

fn status(s: rest::AuthStatus) -> pb::AuthStatusResponse {
    pb::AuthStatusResponse { enabled: s.enabled }
}

/// A prefix given as bytes, as the REST contract's text: a role's prefixes are UTF-8 there.
fn prefix_text(prefix: Bytes) -> Result<String, Status> {
    String::from_utf8(prefix.to_vec()).map_err(|_| {
        status_of(crate::service::ApiError::bad_request(
            "a role's prefixes must be UTF-8",
        ))
    })
}

#[tonic::async_trait]
impl pb::auth_server::Auth for Api {
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        serving(&self.server)?;
        let peer = request.remote_addr().map(|a| a.ip());
        let m = request.into_inner();
        let login = rest::LoginRequest {
            username: m.username,
            password: m.password,
        };
        let answer = service::login(&self.server, login, peer)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::LoginResponse {
            token: answer.token,
            expires_at: answer.expires_at,
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        Ok(Response::new(status(service::status(&self.server))))
    }

    async fn enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        serving(&self.server)?;
        let (via, credentials) = (via(&request).map_err(status_of)?, Credentials::of(&request));
        self.authorize(&credentials, Need::Admin).await?;
        let step = service::enable(&self.server, via)
            .await
            .map_err(status_of)?;
        let m = request.into_inner();
        self.finish(step, m, &credentials, status, |c, o, r| async move {
            AuthClient::with_origin(c, o).enable(r).await
        })
        .await
    }

    async fn disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        serving(&self.server)?;
        let (via, credentials) = (via(&request).map_err(status_of)?, Credentials::of(&request));
        self.authorize(&credentials, Need::Admin).await?;
        let step = service::disable(&self.server, via)
            .await
            .map_err(status_of)?;
        let m = request.into_inner();
        self.finish(step, m, &credentials, status, |c, o, r| async move {
            AuthClient::with_origin(c, o).disable(r).await
        })
        .await
    }

    async fn user_add(
        &self,
        request: Request<pb::UserAddRequest>,
    ) -> Result<Response<pb::User>, Status> {
        serving(&self.server)?;
        let (via, credentials) = (via(&request).map_err(status_of)?, Credentials::of(&request));
        self.authorize(&credentials, Need::Admin).await?;
        let m = request.into_inner();
        let new = rest::NewUser {
            username: m.username.clone(),
            password: m.password.clone(),
            role: m.role.clone(),
        };
        let step = service::add_user(&self.server, via, new)
            .await
            .map_err(status_of)?;
        self.finish(step, m, &credentials, user, |c, o, r| async move {
            AuthClient::with_origin(c, o).user_add(r).await
        })
        .await
    }

    async fn user_delete(
        &self,
        request: Request<pb::UserDeleteRequest>,
    ) -> Result<Response<pb::AuthChangedResponse>, Status> {
        serving(&self.server)?;
        let (via, credentials) = (via(&request).map_err(status_of)?, Credentials::of(&request));
        self.authorize(&credentials, Need::Admin).await?;
        let m = request.into_inner();
        let name = m.username.clone();
        let step = service::remove_user(&self.server, via, name.clone())
            .await
            .map_err(status_of)?;
        self.finish(
            step,
            m,
            &credentials,
            |()| changed(Changed { name }),
            |c, o, r| async move { AuthClient::with_origin(c, o).user_delete(r).await },
        )
        .await
    }

    async fn user_change_password(
        &self,
        request: Request<pb::UserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthChangedResponse>, Status> {
        serving(&self.server)?;
        let (via, credentials) = (via(&request).map_err(status_of)?, Credentials::of(&request));
        let m = request.into_inner();
        self.authorize(&credentials, Need::UserOrAdmin(&m.username))
            .await?;
        let name = m.username.clone();
        let new = rest::NewPassword {
            password: m.password.clone(),
        };
        let step = service::set_password(&self.server, via, name.clone(), new)
            .await
            .map_err(status_of)?;
        self.finish(
            step,
            m,
            &credentials,
            |()| changed(Changed { name }),
            |c, o, r| async move { AuthClient::with_origin(c, o).user_change_password(r).await },
        )
        .await
    }

    async fn user_list(
        &self,
        request: Request<pb::UserListRequest>,
    ) -> Result<Response<pb::UserListResponse>, Status> {
        serving(&self.server)?;
        self.authorize(&Credentials::of(&request), Need::Admin)
            .await?;
        let users = service::users(&self.server).await.map_err(status_of)?;
        Ok(Response::new(pb::UserListResponse {
            users: users.users.into_iter().map(user).collect(),
        }))
    }

    async fn role_put(
        &self,
        request: Request<pb::RolePutRequest>,
    ) -> Result<Response<pb::Role>, Status> {
        serving(&self.server)?;
        let (via, credentials) = (via(&request).map_err(status_of)?, Credentials::of(&request));
        self.authorize(&credentials, Need::Admin).await?;
        let m = request.into_inner();
        let prefixes = m
            .prefixes
            .iter()
            .cloned()
            .map(prefix_text)
            .collect::<Result<Vec<_>, _>>()?;
        let put = rest::RoleRequest {
            permission: m.permission.clone(),
            prefixes,
        };
        let step = service::put_role(&self.server, via, m.name.clone(), put)
            .await
            .map_err(status_of)?;
        self.finish(step, m, &credentials, role, |c, o, r| async move {
            AuthClient::with_origin(c, o).role_put(r).await
        })
        .await
    }

    async fn role_delete(
        &self,
        request: Request<pb::RoleDeleteRequest>,
    ) -> Result<Response<pb::AuthChangedResponse>, Status> {
        serving(&self.server)?;
        let (via, credentials) = (via(&request).map_err(status_of)?, Credentials::of(&request));
        self.authorize(&credentials, Need::Admin).await?;
        let m = request.into_inner();
        let name = m.name.clone();
        let step = service::remove_role(&self.server, via, name.clone())
            .await
            .map_err(status_of)?;
        self.finish(
            step,
            m,
            &credentials,
            |()| changed(Changed { name }),
            |c, o, r| async move { AuthClient::with_origin(c, o).role_delete(r).await },
        )
        .await
    }

    async fn role_list(
        &self,
        request: Request<pb::RoleListRequest>,
    ) -> Result<Response<pb::RoleListResponse>, Status> {
        serving(&self.server)?;
        self.authorize(&Credentials::of(&request), Need::Admin)
            .await?;
        let roles = service::roles(&self.server).await.map_err(status_of)?;
        Ok(Response::new(pb::RoleListResponse {
            roles: roles.roles.into_iter().map(role).collect(),
        }))
    }

    async fn api_key_add(
        &self,
        request: Request<pb::ApiKeyAddRequest>,
    ) -> Result<Response<pb::ApiKeyAddResponse>, Status> {
        serving(&self.server)?;
        let (via, credentials) = (via(&request).map_err(status_of)?, Credentials::of(&request));
        self.authorize(&credentials, Need::Admin).await?;
        let m = request.into_inner();
        let new = rest::NewApiKey {
            name: m.name.clone(),
            role: m.role.clone(),
        };
        let step = service::add_api_key(&self.server, via, new)
            .await
            .map_err(status_of)?;
        self.finish(
            step,
            m,
            &credentials,
            |made| pb::ApiKeyAddResponse {
                id: made.id,
                name: made.name,
                role: made.role,
                key: made.key,
            },
            |c, o, r| async move { AuthClient::with_origin(c, o).api_key_add(r).await },
        )
        .await
    }

    async fn api_key_list(
        &self,
        request: Request<pb::ApiKeyListRequest>,
    ) -> Result<Response<pb::ApiKeyListResponse>, Status> {
        serving(&self.server)?;
        self.authorize(&Credentials::of(&request), Need::Admin)
            .await?;
        let keys = service::api_keys(&self.server).await.map_err(status_of)?;
        Ok(Response::new(pb::ApiKeyListResponse {
            api_keys: keys
                .api_keys
                .into_iter()
                .map(|k| pb::ApiKey {
                    id: k.id,
                    name: k.name,
                    role: k.role,
                    created_index: k.created_index,
                })
                .collect(),
        }))
    }

    async fn api_key_revoke(
        &self,
        request: Request<pb::ApiKeyRevokeRequest>,
    ) -> Result<Response<pb::AuthChangedResponse>, Status> {
        serving(&self.server)?;
        let (via, credentials) = (via(&request).map_err(status_of)?, Credentials::of(&request));
        self.authorize(&credentials, Need::Admin).await?;
        let m = request.into_inner();
        let name = m.id.clone();
        let step = service::revoke_api_key(&self.server, via, name.clone())
            .await
            .map_err(status_of)?;
        self.finish(
            step,
            m,
            &credentials,
            |()| changed(Changed { name }),
            |c, o, r| async move { AuthClient::with_origin(c, o).api_key_revoke(r).await },
        )
        .await
    }
}
