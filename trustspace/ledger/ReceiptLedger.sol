// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title ReceiptLedger: an append-only anchor for trustspace data-exchange receipts.
/// @notice The chain stores fingerprints only. A receipt itself is an SM2-signed document
/// (GB/T 32918.2-2016) that the nodes keep and verify off-chain; here it is named by its id
/// and its SM3 digest, so anyone holding the document can show it was recorded, and when.
/// Three kinds of write, each refused when it would repeat or rewrite history:
///   record       one receipt;                  idempotent by receiptId
///   recordBatch  a Merkle root over receipts;  idempotent by root (RFC 9162 §2.1.1, SM3)
///   anchor       a signed log checkpoint;      sizes for one origin only grow
/// Only accounts the owner authorised may write, so a stranger cannot pollute the ledger.
contract ReceiptLedger {
    struct Anchored {
        uint64 size;
        bytes32 rootHash;
    }

    address public immutable owner;
    mapping(address account => bool) public authorised;
    /// Block in which a receipt was recorded; 0 means never (no transaction lands in block 0).
    mapping(bytes32 receiptId => uint256 blockNumber) public recordedAt;
    /// Block in which a batch root was anchored; 0 means never.
    mapping(bytes32 root => uint256 blockNumber) public batchAt;
    mapping(bytes32 origin => Anchored) private checkpoints;

    event Authorised(address indexed account);
    event Revoked(address indexed account);
    event Receipt(
        bytes32 indexed receiptId,
        uint8 kind,
        bytes32 indexed agreement,
        bytes32 digest,
        bytes32 submitter,
        address sender
    );
    event Batch(
        bytes32 indexed root,
        uint64 count,
        bytes32 firstReceiptId,
        bytes32 lastReceiptId,
        address sender
    );
    event Checkpoint(
        bytes32 indexed origin,
        uint64 size,
        bytes32 rootHash,
        bytes32 checkpointDigest,
        address sender
    );

    error NotOwner(address sender);
    error NotAuthorised(address sender);
    error AlreadyRecorded(bytes32 receiptId, uint256 blockNumber);
    error BatchAlreadyAnchored(bytes32 root, uint256 blockNumber);
    error EmptyBatch();
    /// The checkpoint does not grow the log: smaller than the last one anchored, or the same.
    error CheckpointNotNewer(bytes32 origin, uint64 size, uint64 anchoredSize);
    /// Same size as the last anchored checkpoint but another root: two views of one log.
    error CheckpointConflict(bytes32 origin, uint64 size, bytes32 anchoredRoot);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    modifier onlyAuthorised() {
        if (!authorised[msg.sender]) revert NotAuthorised(msg.sender);
        _;
    }

    constructor() {
        owner = msg.sender;
        authorised[msg.sender] = true;
        emit Authorised(msg.sender);
    }

    function authorise(address account) external onlyOwner {
        authorised[account] = true;
        emit Authorised(account);
    }

    function revoke(address account) external onlyOwner {
        authorised[account] = false;
        emit Revoked(account);
    }

    function record(
        bytes32 receiptId,
        uint8 kind,
        bytes32 agreement,
        bytes32 digest,
        bytes32 submitter
    ) external onlyAuthorised {
        uint256 at = recordedAt[receiptId];
        if (at != 0) revert AlreadyRecorded(receiptId, at);
        recordedAt[receiptId] = block.number;
        emit Receipt(receiptId, kind, agreement, digest, submitter, msg.sender);
    }

    function recordBatch(
        bytes32 root,
        uint64 count,
        bytes32 firstReceiptId,
        bytes32 lastReceiptId
    ) external onlyAuthorised {
        if (count == 0) revert EmptyBatch();
        uint256 at = batchAt[root];
        if (at != 0) revert BatchAlreadyAnchored(root, at);
        batchAt[root] = block.number;
        emit Batch(root, count, firstReceiptId, lastReceiptId, msg.sender);
    }

    function anchor(
        bytes32 origin,
        uint64 size,
        bytes32 rootHash,
        bytes32 checkpointDigest
    ) external onlyAuthorised {
        Anchored memory last = checkpoints[origin];
        if (size == last.size && size != 0 && rootHash != last.rootHash) {
            revert CheckpointConflict(origin, size, last.rootHash);
        }
        if (size <= last.size) revert CheckpointNotNewer(origin, size, last.size);
        checkpoints[origin] = Anchored(size, rootHash);
        emit Checkpoint(origin, size, rootHash, checkpointDigest, msg.sender);
    }

    /// The last checkpoint anchored for an origin (size 0: none yet).
    function checkpointOf(bytes32 origin) external view returns (uint64 size, bytes32 rootHash) {
        Anchored memory last = checkpoints[origin];
        return (last.size, last.rootHash);
    }
}
