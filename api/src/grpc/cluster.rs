//! The `raftkv.v1.Cluster` and `raftkv.v1.Maintenance` services: each method decodes its
//! message into the shared handler's arguments ([`crate::service::cluster`]) and encodes the
//! answer, or relays the request to the leader when the handler says so. `Maintenance.Health`
//! and `Maintenance.Ready` are `GET /health` and `GET /ready`, refusals included.

use proto::pb::{self, cluster_client::ClusterClient};
use proto::rest;
use tonic::{Request, Response, Status};

use super::forward::via;
use super::status::status_of;
use super::{Api, Credentials, serving};
use crate::auth::{Need, Scope};
use crate::service::cluster as service;

/// An optional text field: proto3 sends "not given" as empty.
fn given(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn member(info: rest::LeaderInfo) -> pb::Member {
    pb::Member {
        id: info.id.0,
        raft_addr: info.raft_addr,
        http_addr: info.http_addr,
        grpc_addr: info.grpc_addr.unwrap_or_default(),
        role: String::new(),
        match_index: None,
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for Api {
    async fn nodes(
        &self,
        request: Request<pb::NodesRequest>,
    ) -> Result<Response<pb::NodesResponse>, Status> {
        self.authorize(&Credentials::of(&request), Need::Read(Scope::Cluster))
            .await?;
        // Like GET /cluster/nodes, served even by a removed node: it tells where it stands.
        let nodes = service::nodes(&self.server)
            .nodes
            .into_iter()
            .map(|n| pb::Member {
                id: n.id.0,
                raft_addr: n.raft_addr.unwrap_or_default(),
                http_addr: n.http_addr.unwrap_or_default(),
                grpc_addr: n.grpc_addr.unwrap_or_default(),
                role: n.role,
                match_index: n.match_index,
            })
            .collect();
        Ok(Response::new(pb::NodesResponse { nodes }))
    }

    async fn leader(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        self.authorize(&Credentials::of(&request), Need::Read(Scope::Cluster))
            .await?;
        serving(&self.server)?;
        let leader = service::leader(&self.server).map_err(status_of)?;
        Ok(Response::new(pb::LeaderResponse {
            id: leader.id.0,
            raft_addr: leader.raft_addr,
            http_addr: leader.http_addr,
            grpc_addr: leader.grpc_addr.unwrap_or_default(),
        }))
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        serving(&self.server)?;
        let via = via(&request).map_err(status_of)?;
        let credentials = Credentials::of(&request);
        self.authorize(&credentials, Need::Admin).await?;
        let message = request.into_inner();
        let join = rest::JoinRequest {
            node_id: message.node_id.clone(),
            raft_addr: message.raft_addr.clone(),
            http_addr: message.http_addr.clone(),
            grpc_addr: given(message.grpc_addr.clone()),
            cluster_id: given(message.cluster_id.clone()),
            fresh: message.fresh,
        };
        let step = service::join(&self.server, via, join)
            .await
            .map_err(status_of)?;
        self.finish(
            step,
            message,
            &credentials,
            |joined| pb::JoinResponse {
                id: joined.id.0,
                role: joined.role,
                cluster_id: joined.cluster_id.unwrap_or_default(),
                members: joined.members.into_iter().map(member).collect(),
            },
            |c, o, r| async move { ClusterClient::with_origin(c, o).join(r).await },
        )
        .await
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        serving(&self.server)?;
        let via = via(&request).map_err(status_of)?;
        let credentials = Credentials::of(&request);
        self.authorize(&credentials, Need::Admin).await?;
        let message = request.into_inner();
        let step = service::remove(&self.server, via, message.node_id.clone())
            .await
            .map_err(status_of)?;
        self.finish(
            step,
            message,
            &credentials,
            |removed| pb::RemoveResponse {
                removed: removed.removed.0,
            },
            |c, o, r| async move { ClusterClient::with_origin(c, o).remove(r).await },
        )
        .await
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        serving(&self.server)?;
        let via = via(&request).map_err(status_of)?;
        let credentials = Credentials::of(&request);
        self.authorize(&credentials, Need::Admin).await?;
        let message = request.into_inner();
        let step = service::transfer(&self.server, via, message.node_id.clone())
            .await
            .map_err(status_of)?;
        self.finish(
            step,
            message,
            &credentials,
            |moved| pb::TransferLeaderResponse {
                leader: moved.leader.0,
            },
            |c, o, r| async move { ClusterClient::with_origin(c, o).transfer_leader(r).await },
        )
        .await
    }
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for Api {
    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        serving(&self.server)?;
        self.authorize(&Credentials::of(&request), Need::Admin)
            .await?;
        let taken = service::snapshot(&self.server).await.map_err(status_of)?;
        Ok(Response::new(pb::SnapshotResponse {
            index: taken.index,
            term: taken.term,
            keys: taken.keys,
            file: taken.file,
            taken: taken.taken,
        }))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.authorize(&Credentials::of(&request), Need::Read(Scope::Cluster))
            .await?;
        // Served even by a removed node, whose role then says so.
        let status = service::status(&self.server);
        Ok(Response::new(pb::StatusResponse {
            node_id: status.node_id.0,
            cluster_id: status.cluster_id,
            role: status.role,
            term: status.term,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            leader: status.leader.map(|l| l.0).unwrap_or_default(),
            snapshot_index: status.snapshot_index,
            db_size_bytes: status.db_size_bytes,
        }))
    }

    async fn health(
        &self,
        _request: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        let health = service::health(&self.server).map_err(status_of)?;
        Ok(Response::new(pb::HealthResponse {
            status: health.status,
        }))
    }

    async fn ready(
        &self,
        _request: Request<pb::ReadyRequest>,
    ) -> Result<Response<pb::ReadyResponse>, Status> {
        let ready = service::ready(&self.server).map_err(status_of)?;
        Ok(Response::new(pb::ReadyResponse {
            status: ready.status,
            cluster_id: ready.cluster_id,
            term: ready.term,
            applied_index: ready.applied_index,
            commit_index: ready.commit_index,
            snapshot_index: ready.snapshot_index,
            quota: Some(pb::Quota {
                used_bytes: ready.quota.used_bytes,
                quota_bytes: ready.quota.quota_bytes,
                exceeded: ready.quota.exceeded,
            }),
        }))
    }
}
