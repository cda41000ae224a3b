//! Every error code the API answers with: its stable token, its HTTP status, and the gRPC
//! status it maps to. docs/api.md's error table lists exactly these (a test checks both ways).
//!
//! Invariant: a code's token and HTTP status never change once released; clients key their
//! retries on them (a `4xx` is final, a `503` may succeed on retry).

/// An error code of the REST and gRPC APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    /// 307: a follower asked not to forward; the leader's URL is in `Location`.
    NotLeader,
    /// 400: malformed path, query, header or body.
    BadRequest,
    /// 400: a query parameter the route does not take.
    UnknownParameter,
    /// 400: a query parameter given more than once.
    RepeatedParameter,
    /// 400: an `X-Raftkv-*` header the route does not take.
    UnknownHeader,
    /// 400: an `X-Raftkv-*` header given more than once.
    RepeatedHeader,
    /// 400: a prefix delete with an empty prefix and without `all`.
    EmptyPrefix,
    /// 400: a session id or sequence that is not a number in range, or one without the other.
    BadSession,
    /// 401: no credential, or one that is not valid (unknown, expired, revoked, forged).
    Unauthenticated,
    /// 403: a valid credential whose role does not allow the request.
    PermissionDenied,
    /// 404: the key does not exist.
    NotFound,
    /// 404: no such route.
    NoRoute,
    /// 404: a remove or transfer naming a node that is not a member.
    UnknownMember,
    /// 404: no such user, role or API key.
    AuthNotFound,
    /// 405: a known route with the wrong method.
    MethodNotAllowed,
    /// 408: the request body did not arrive in time.
    BodyTimeout,
    /// 409: a compare-and-swap whose condition did not hold.
    CasFailed,
    /// 409: a membership change while another is in flight.
    ConfChangeInProgress,
    /// 409: a membership change the configuration cannot take.
    InvalidMembershipChange,
    /// 409: a leadership transfer to a learner.
    InvalidTransferTarget,
    /// 409: a join naming a member with other addresses, or a blank node naming a voter.
    MemberExists,
    /// 409: a join at an address another member has.
    AddressInUse,
    /// 409: a join of a node of another cluster.
    ClusterMismatch,
    /// 409: a join whose name hashes to another member's id.
    IdCollision,
    /// 409: a snapshot on a node that has applied nothing.
    NothingToSnapshot,
    /// 409: a session write the server no longer remembers.
    SessionExpired,
    /// 409: a session write older than the newest kept for it.
    StaleSequence,
    /// 409: a session's latest sequence reused for another write.
    SequenceReused,
    /// 409: a user or API key that exists already.
    AlreadyExists,
    /// 409: an access change the records cannot take (the last admin, a role in use, a limit).
    AuthConflict,
    /// 410: this node was removed from its cluster.
    NodeRemoved,
    /// 413: a key, value or body over its limit.
    TooLarge,
    /// 429: the leader holds its limit of pending linearizable reads.
    TooManyReads,
    /// 429: the client is over its request rate, or its failed logins are over their limit.
    RateLimited,
    /// 500: the server broke one of its own rules (a bug).
    Internal,
    /// 503: no leader known in time, or the leader changed before a write committed.
    NoLeader,
    /// 503: the node is not ready.
    NotReady,
    /// 503: the node is shutting down.
    ShuttingDown,
    /// 503: leadership is being handed over.
    TransferInProgress,
    /// 503: the leader holds too much uncommitted data.
    ProposalDropped,
    /// 503: the node serves its most connections already.
    TooManyConnections,
    /// 503: request bodies being received hold their memory limit.
    Overloaded,
    /// 503: this node's storage failed for good.
    StorageFailed,
    /// 504: the outcome is unknown after the timeout (it may still apply).
    Timeout,
    /// 507: a write that would grow a state at its space quota.
    QuotaExceeded,
    /// 507: the leader's disk is short of its free-space reserve.
    NoSpace,
}

/// The gRPC status codes the API answers with (`google.rpc.Code`'s numbering, so that this
/// crate's REST half needs no gRPC types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrpcCode {
    /// 3: the request is malformed; retrying it cannot succeed.
    InvalidArgument = 3,
    /// 4: the outcome is unknown after the deadline.
    DeadlineExceeded = 4,
    /// 5: no such key or member.
    NotFound = 5,
    /// 6: a join that collides with an existing member.
    AlreadyExists = 6,
    /// 8: a size, quota, space or load limit.
    ResourceExhausted = 8,
    /// 7: the credential's role does not allow the request.
    PermissionDenied = 7,
    /// 9: the state does not allow it (a failed compare-and-swap, a session out of step).
    FailedPrecondition = 9,
    /// 10: a concurrent change got there first; retry the whole operation.
    Aborted = 10,
    /// 12: no such method.
    Unimplemented = 12,
    /// 13: a server bug.
    Internal = 13,
    /// 14: the cluster cannot serve it now; a retry may succeed.
    Unavailable = 14,
    /// 16: no valid credential.
    Unauthenticated = 16,
}

impl ErrorCode {
    /// Every code, in docs/api.md's order.
    pub const ALL: [ErrorCode; 46] = [
        ErrorCode::NotLeader,
        ErrorCode::BadRequest,
        ErrorCode::UnknownParameter,
        ErrorCode::RepeatedParameter,
        ErrorCode::UnknownHeader,
        ErrorCode::RepeatedHeader,
        ErrorCode::EmptyPrefix,
        ErrorCode::BadSession,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::NotFound,
        ErrorCode::NoRoute,
        ErrorCode::UnknownMember,
        ErrorCode::AuthNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::BodyTimeout,
        ErrorCode::CasFailed,
        ErrorCode::ConfChangeInProgress,
        ErrorCode::InvalidMembershipChange,
        ErrorCode::InvalidTransferTarget,
        ErrorCode::MemberExists,
        ErrorCode::AddressInUse,
        ErrorCode::ClusterMismatch,
        ErrorCode::IdCollision,
        ErrorCode::NothingToSnapshot,
        ErrorCode::SessionExpired,
        ErrorCode::StaleSequence,
        ErrorCode::SequenceReused,
        ErrorCode::AlreadyExists,
        ErrorCode::AuthConflict,
        ErrorCode::NodeRemoved,
        ErrorCode::TooLarge,
        ErrorCode::TooManyReads,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::NoLeader,
        ErrorCode::NotReady,
        ErrorCode::ShuttingDown,
        ErrorCode::TransferInProgress,
        ErrorCode::ProposalDropped,
        ErrorCode::TooManyConnections,
        ErrorCode::Overloaded,
        ErrorCode::StorageFailed,
        ErrorCode::Timeout,
        ErrorCode::QuotaExceeded,
        ErrorCode::NoSpace,
    ];

    /// The stable token of the JSON body's `code`.
    pub fn as_str(self) -> &'static str {
        self.row().0
    }

    /// The HTTP status.
    pub fn http_status(self) -> u16 {
        self.row().1
    }

    /// The gRPC status.
    pub fn grpc(self) -> GrpcCode {
        self.row().2
    }

    /// The code whose token is `token`.
    pub fn from_token(token: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == token)
    }

    fn row(self) -> (&'static str, u16, GrpcCode) {
        use GrpcCode as G;
        match self {
            ErrorCode::NotLeader => ("not_leader", 307, G::Unavailable),
            ErrorCode::BadRequest => ("bad_request", 400, G::InvalidArgument),
            ErrorCode::UnknownParameter => ("unknown_parameter", 400, G::InvalidArgument),
            ErrorCode::RepeatedParameter => ("repeated_parameter", 400, G::InvalidArgument),
            ErrorCode::UnknownHeader => ("unknown_header", 400, G::InvalidArgument),
            ErrorCode::RepeatedHeader => ("repeated_header", 400, G::InvalidArgument),
            ErrorCode::EmptyPrefix => ("empty_prefix", 400, G::InvalidArgument),
            ErrorCode::BadSession => ("bad_session", 400, G::InvalidArgument),
            ErrorCode::Unauthenticated => ("unauthenticated", 401, G::Unauthenticated),
            ErrorCode::PermissionDenied => ("permission_denied", 403, G::PermissionDenied),
            ErrorCode::NotFound => ("not_found", 404, G::NotFound),
            ErrorCode::NoRoute => ("no_route", 404, G::Unimplemented),
            ErrorCode::UnknownMember => ("unknown_member", 404, G::NotFound),
            ErrorCode::AuthNotFound => ("auth_not_found", 404, G::NotFound),
            ErrorCode::MethodNotAllowed => ("method_not_allowed", 405, G::Unimplemented),
            ErrorCode::BodyTimeout => ("body_timeout", 408, G::DeadlineExceeded),
            ErrorCode::CasFailed => ("cas_failed", 409, G::FailedPrecondition),
            ErrorCode::ConfChangeInProgress => ("conf_change_in_progress", 409, G::Aborted),
            ErrorCode::InvalidMembershipChange => {
                ("invalid_membership_change", 409, G::FailedPrecondition)
            }
            ErrorCode::InvalidTransferTarget => {
                ("invalid_transfer_target", 409, G::FailedPrecondition)
            }
            ErrorCode::MemberExists => ("member_exists", 409, G::AlreadyExists),
            ErrorCode::AddressInUse => ("address_in_use", 409, G::AlreadyExists),
            ErrorCode::ClusterMismatch => ("cluster_mismatch", 409, G::FailedPrecondition),
            ErrorCode::IdCollision => ("id_collision", 409, G::AlreadyExists),
            ErrorCode::NothingToSnapshot => ("nothing_to_snapshot", 409, G::FailedPrecondition),
            ErrorCode::SessionExpired => ("session_expired", 409, G::FailedPrecondition),
            ErrorCode::StaleSequence => ("stale_sequence", 409, G::FailedPrecondition),
            ErrorCode::SequenceReused => ("sequence_reused", 409, G::FailedPrecondition),
            ErrorCode::AlreadyExists => ("already_exists", 409, G::AlreadyExists),
            ErrorCode::AuthConflict => ("auth_conflict", 409, G::FailedPrecondition),
            ErrorCode::NodeRemoved => ("node_removed", 410, G::FailedPrecondition),
            ErrorCode::TooLarge => ("too_large", 413, G::ResourceExhausted),
            ErrorCode::TooManyReads => ("too_many_reads", 429, G::ResourceExhausted),
            ErrorCode::RateLimited => ("rate_limited", 429, G::ResourceExhausted),
            ErrorCode::Internal => ("internal", 500, G::Internal),
            ErrorCode::NoLeader => ("no_leader", 503, G::Unavailable),
            ErrorCode::NotReady => ("not_ready", 503, G::Unavailable),
            ErrorCode::ShuttingDown => ("shutting_down", 503, G::Unavailable),
            ErrorCode::TransferInProgress => ("transfer_in_progress", 503, G::Unavailable),
            ErrorCode::ProposalDropped => ("proposal_dropped", 503, G::Unavailable),
            ErrorCode::TooManyConnections => ("too_many_connections", 503, G::Unavailable),
            ErrorCode::Overloaded => ("overloaded", 503, G::Unavailable),
            ErrorCode::StorageFailed => ("storage_failed", 503, G::Unavailable),
            ErrorCode::Timeout => ("timeout", 504, G::DeadlineExceeded),
            ErrorCode::QuotaExceeded => ("quota_exceeded", 507, G::ResourceExhausted),
            ErrorCode::NoSpace => ("no_space", 507, G::ResourceExhausted),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_token_and_reads_back_from_it() {
        // Given every code, then no two share a token, and each token names its code.
        let mut tokens: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        tokens.sort_unstable();
        tokens.dedup();
        assert_eq!(tokens.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_token(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::from_token("no_such_code"), None);
    }

    #[test]
    fn final_answers_map_to_final_grpc_codes_and_retryable_ones_to_unavailable() {
        // Given the codes, then a 503 is UNAVAILABLE (a client retries it), a 4xx is never
        // UNAVAILABLE (retrying cannot help), and an unknown outcome is DEADLINE_EXCEEDED.
        for code in ErrorCode::ALL {
            match code.http_status() {
                503 => assert_eq!(code.grpc(), GrpcCode::Unavailable, "{code}"),
                400..=499 => assert_ne!(code.grpc(), GrpcCode::Unavailable, "{code}"),
                _ => {}
            }
        }
        assert_eq!(ErrorCode::Timeout.grpc(), GrpcCode::DeadlineExceeded);
        assert_eq!(ErrorCode::CasFailed.grpc(), GrpcCode::FailedPrecondition);
        assert_eq!(ErrorCode::TooLarge.grpc(), GrpcCode::ResourceExhausted);
    }
}
