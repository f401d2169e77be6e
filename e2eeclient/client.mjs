// A test-only Matrix client: matrix-js-sdk with its Rust crypto, playing "the human user's
// device" in the E2EE integration tests. It is driven by internal/jsclient (Go).
//
// Protocol: one JSON object per line on stdin, {"id": 1, "cmd": "login", "args": {...}}; one
// answer per request on stdout, {"id": 1, "ok": true, "result": {...}} or
// {"id": 1, "ok": false, "error": "...", "code": "...", "data": {...}}. Unsolicited lines
// {"event": "<kind>", ...} may come in between. Everything else (logs) goes to stderr.
//
// Requests run concurrently: a wait_event does not hold up a send.
//
// Needs Node >= 22 (matrix-js-sdk 43); package.json brings one from npm (node-linux-*).

import readline from "node:readline";
import process from "node:process";

// stdout carries the protocol only: route every console method to stderr before the SDK
// (which logs through loglevel -> console) is loaded. matrix-js-sdk sets each of its loggers
// to DEBUG, so the level filter is applied here: E2EECLIENT_SDK_LOG_LEVEL (default warn).
const out = process.stdout;
const levels = ["trace", "debug", "log", "info", "warn", "error"];
const minLevel = Math.max(0, levels.indexOf((process.env.E2EECLIENT_SDK_LOG_LEVEL || "warn").toLowerCase()));
function writeLog(level, a) {
	process.stderr.write(
		`[e2eeclient ${new Date().toISOString().slice(11, 23)} ${level}] ` +
			a.map((x) => (typeof x === "string" ? x : safeStringify(x))).join(" ") +
			"\n",
	);
}
for (const level of levels) {
	console[level] = levels.indexOf(level) >= minLevel ? (...a) => writeLog(level, a) : () => {};
}

function safeStringify(x) {
	if (x instanceof Error) return x.stack || String(x);
	try {
		return JSON.stringify(x);
	} catch {
		return String(x);
	}
}

const sdk = await import("matrix-js-sdk");
const { decodeRecoveryKey } = await import("matrix-js-sdk/lib/crypto-api/recovery-key.js");
const cryptoApi = await import("matrix-js-sdk/lib/crypto-api/index.js");
const {
	ClientEvent,
	RoomEvent,
	MatrixEventEvent,
	RoomStateEvent,
	SyncState,
	createClient,
	MatrixError,
} = sdk;

// Our own log lines are always written.
const log = (...a) => writeLog("client", a);

/** @type {import("matrix-js-sdk").MatrixClient | null} */
let client = null;
const state = {
	userId: null,
	deviceId: null,
	homeserver: null,
	autoJoin: false,
	emitEvents: false,
	syncState: null,
	// roomId -> Map(eventId -> MatrixEvent), in arrival order
	events: new Map(),
	waiters: new Set(),
	secretStorageKey: null, // Uint8Array, for the getSecretStorageKey callback
	secretStorageKeyId: null,
	joining: new Set(),
	acceptVerifications: false,
	verifications: [], // finished or failed verifications, newest last
};

function emit(kind, obj) {
	out.write(JSON.stringify({ event: kind, ...obj }) + "\n");
}

function reply(obj) {
	out.write(JSON.stringify(obj) + "\n");
}

class CmdError extends Error {
	constructor(code, message, data) {
		super(message);
		this.code = code;
		this.data = data;
	}
}

function need(args, ...names) {
	for (const n of names) {
		if (args[n] === undefined || args[n] === null || args[n] === "") {
			throw new CmdError("invalid_request", `missing argument '${n}'`);
		}
	}
}

function requireClient() {
	if (!client) throw new CmdError("not_logged_in", "call login first");
	return client;
}

function sleep(ms) {
	return new Promise((r) => setTimeout(r, ms));
}

// withTimeout settles like promise, or fails with a timeout error after ms.
function withTimeout(promise, ms, what) {
	let timer;
	const t = new Promise((_, reject) => {
		timer = setTimeout(() => reject(new CmdError("timeout", `timed out after ${ms} ms waiting for ${what}`)), ms);
	});
	return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

// waitFor polls cond (async allowed) until it returns a truthy value or timeoutMs passes.
async function waitFor(what, timeoutMs, cond, intervalMs = 50) {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		const v = await cond();
		if (v) return v;
		if (Date.now() > deadline) throw new CmdError("timeout", `timed out after ${timeoutMs} ms waiting for ${what}`);
		await sleep(intervalMs);
	}
}

// ---------------------------------------------------------------- events and waiters

function settled(ev) {
	// A redacted encrypted event has lost its ciphertext: nothing left to decrypt.
	if (ev.isRedacted()) return true;
	if (ev.isBeingDecrypted() || ev.shouldAttemptDecryption()) return false;
	// Encrypted, not (yet) decrypted and not marked as a failure: decryption is pending.
	if (ev.isEncrypted() && ev.getType() === "m.room.encrypted" && !ev.isDecryptionFailure()) return false;
	return true;
}

async function senderDevice(ev) {
	// The Rust crypto layer records the sender's Curve25519 key; find the device that owns it.
	const senderKey = ev.getSenderKey?.() || ev.getWireContent().sender_key;
	const wireDevice = ev.getWireContent().device_id || null;
	if (!senderKey || !client?.getCrypto()) return wireDevice;
	try {
		const map = await client.getCrypto().getUserDeviceInfo([ev.getSender()], true);
		const devices = map.get(ev.getSender());
		if (devices) {
			for (const d of devices.values()) {
				if (d.getIdentityKey() === senderKey) return d.deviceId;
			}
		}
	} catch (e) {
		log("senderDevice:", e);
	}
	return wireDevice;
}

async function eventJSON(ev) {
	const encrypted = ev.isEncrypted();
	const j = {
		event_id: ev.getId(),
		room_id: ev.getRoomId(),
		type: ev.getType(),
		sender: ev.getSender(),
		origin_server_ts: ev.getTs(),
		content: ev.getContent(),
		encrypted,
		decryption_failed: ev.isDecryptionFailure(),
		redacted: ev.isRedacted(),
	};
	if (ev.isState()) j.state_key = ev.getStateKey();
	const redacts = ev.event.redacts ?? ev.getContent()?.redacts;
	if (redacts) j.redacts = redacts;
	if (encrypted) {
		j.wire_type = ev.getWireType();
		j.wire_content = ev.getWireContent();
		if (ev.isDecryptionFailure()) {
			j.decryption_failure_reason = ev.decryptionFailureReason ?? null;
		} else {
			j.sender_device = await senderDevice(ev);
			try {
				const info = await client.getCrypto().getEncryptionInfoForEvent(ev);
				if (info) {
					j.shield_colour = cryptoApi.EventShieldColour[info.shieldColour] ?? info.shieldColour;
					j.shield_reason =
						info.shieldReason === null ? null : (cryptoApi.EventShieldReason[info.shieldReason] ?? info.shieldReason);
				}
			} catch (e) {
				log("getEncryptionInfoForEvent:", e);
			}
			if (j.sender_device) {
				const st = await client.getCrypto().getDeviceVerificationStatus(ev.getSender(), j.sender_device);
				j.sender_device_status = deviceStatusJSON(st);
			}
		}
	}
	return j;
}

function describe(ev) {
	const flags = [];
	if (ev.isEncrypted()) flags.push("encrypted");
	if (ev.isBeingDecrypted()) flags.push("decrypting");
	if (ev.shouldAttemptDecryption()) flags.push("not-yet-decrypted");
	if (ev.isDecryptionFailure()) flags.push("failed");
	if (ev.isRedacted()) flags.push("redacted");
	return `${ev.getType()} from ${ev.getSender()}${flags.length ? " [" + flags.join(",") + "]" : ""}`;
}

function matches(ev, f) {
	if (f.event_id && ev.getId() !== f.event_id) return false;
	if (f.sender && ev.getSender() !== f.sender) return false;
	if (f.type && ev.getType() !== f.type) return false;
	if (f.body !== undefined && f.body !== null) {
		const body = ev.getContent()?.body;
		if (typeof body !== "string") return false;
		if (f.body_contains ? !body.includes(f.body) : body !== f.body) return false;
	}
	if (f.relates_to) {
		const rel = ev.getWireContent()?.["m.relates_to"] ?? ev.getContent()?.["m.relates_to"];
		const inReply = rel?.["m.in_reply_to"]?.event_id;
		if (rel?.event_id !== f.relates_to && inReply !== f.relates_to) return false;
	}
	if (f.redacts) {
		const r = ev.event.redacts ?? ev.getContent()?.redacts;
		if (r !== f.redacts) return false;
	}
	if (f.redacted && !ev.isRedacted()) return false;
	return true;
}

function remember(ev, room) {
	const roomId = room?.roomId ?? ev.getRoomId();
	if (!roomId || !ev.getId() || ev.getId().startsWith("~")) return; // local echo
	let m = state.events.get(roomId);
	if (!m) state.events.set(roomId, (m = new Map()));
	if (m.has(ev.getId())) return;
	m.set(ev.getId(), ev);
	ev.on(MatrixEventEvent.Decrypted, () => {
		checkWaiters(roomId);
		if (state.emitEvents) eventJSON(ev).then((j) => emit("decrypted", { data: j }));
	});
	checkWaiters(roomId);
	if (state.emitEvents && settled(ev)) eventJSON(ev).then((j) => emit("timeline", { data: j }));
}

function scanRoom(roomId) {
	const room = client?.getRoom(roomId);
	if (!room) return;
	for (const ev of room.getLiveTimeline().getEvents()) remember(ev, room);
}

function checkWaiters(roomId) {
	for (const w of state.waiters) {
		if (w.roomId === roomId) w.check();
	}
}

async function waitEvent(args) {
	need(args, "room_id");
	const c = requireClient();
	const timeoutMs = args.timeout_ms ?? 30000;
	scanRoom(args.room_id);
	return await new Promise((resolve, reject) => {
		let failedMatch = null; // an undecryptable event matched by event_id
		const w = {
			roomId: args.room_id,
			check: () => {
				const m = state.events.get(args.room_id);
				if (!m) return;
				for (const ev of m.values()) {
					if (args.event_id && ev.getId() === args.event_id && ev.isDecryptionFailure()) {
						failedMatch = ev; // Rust crypto retries when keys arrive: keep waiting.
						continue;
					}
					if (!settled(ev)) continue;
					if (ev.isDecryptionFailure()) continue;
					if (matches(ev, args)) {
						done();
						eventJSON(ev).then(resolve, reject);
						return;
					}
				}
			},
		};
		const timer = setTimeout(async () => {
			done();
			if (failedMatch) {
				// Answer with the event so that the caller sees the failure and its reason.
				resolve(await eventJSON(failedMatch));
				return;
			}
			const failures = [];
			const pending = [];
			const seen = [];
			for (const ev of state.events.get(args.room_id)?.values() ?? []) {
				if (ev.isDecryptionFailure()) failures.push({ event_id: ev.getId(), sender: ev.getSender(), reason: ev.decryptionFailureReason ?? null, message: ev.getContent()?.body });
				else if (!settled(ev)) pending.push(`${ev.getId()} (${describe(ev)})`);
				seen.push(`${ev.getId()} ${describe(ev)}`);
			}
			log(`wait_event ${JSON.stringify(args)} timed out; events seen in the room:\n  ${seen.slice(-30).join("\n  ")}`);
			let msg = `no matching event in ${args.room_id} after ${timeoutMs} ms`;
			if (failures.length) msg += `; ${failures.length} event(s) failed to decrypt: ${JSON.stringify(failures)}`;
			if (pending.length) msg += `; ${pending.length} event(s) still being decrypted: ${pending.join(", ")}`;
			const room = c.getRoom(args.room_id);
			if (!room) msg += `; the room is unknown to this client (not joined?)`;
			reject(new CmdError("timeout", msg, { decryption_failures: failures, pending }));
		}, timeoutMs);
		const done = () => {
			clearTimeout(timer);
			state.waiters.delete(w);
		};
		state.waiters.add(w);
		w.check();
	});
}

// ---------------------------------------------------------------- login and crypto

async function login(args) {
	need(args, "homeserver", "user_id", "password");
	if (client) throw new CmdError("invalid_request", "already logged in");
	const t0 = Date.now();
	const tmp = createClient({ baseUrl: args.homeserver });
	const res = await tmp.loginRequest({
		type: "m.login.password",
		identifier: { type: "m.id.user", user: args.user_id },
		password: args.password,
		device_id: args.device_id || undefined,
		initial_device_display_name: args.device_name || "e2eeclient (matrix-js-sdk)",
	});
	tmp.stopClient();
	const tLogin = Date.now();
	state.userId = res.user_id;
	state.deviceId = res.device_id;
	state.homeserver = args.homeserver;
	state.autoJoin = !!args.auto_join;
	state.emitEvents = !!args.emit_events;
	state.acceptVerifications = !!args.accept_verifications;
	if (args.recovery_key) state.secretStorageKey = decodeRecoveryKey(args.recovery_key);

	client = createClient({
		baseUrl: args.homeserver,
		userId: res.user_id,
		deviceId: res.device_id,
		accessToken: res.access_token,
		cryptoCallbacks: {
			getSecretStorageKey: async ({ keys }) => {
				if (!state.secretStorageKey) return null;
				const keyId = state.secretStorageKeyId && keys[state.secretStorageKeyId] ? state.secretStorageKeyId : Object.keys(keys)[0];
				return [keyId, state.secretStorageKey];
			},
			cacheSecretStorageKey: (keyId, _info, key) => {
				state.secretStorageKeyId = keyId;
				state.secretStorageKey = key;
			},
		},
	});
	await client.initRustCrypto({ useIndexedDB: false });
	const tCrypto = Date.now();

	client.on(RoomEvent.Timeline, (ev, room) => remember(ev, room));
	client.on(RoomEvent.Redaction, (_ev, room) => room && checkWaiters(room.roomId));
	client.on(RoomEvent.MyMembership, (room, membership, prev) => {
		if (state.emitEvents) emit("membership", { room_id: room.roomId, membership, prev_membership: prev ?? null });
		if (membership === "invite" && state.autoJoin && !state.joining.has(room.roomId)) {
			state.joining.add(room.roomId);
			joinWithRetry(room.roomId).finally(() => state.joining.delete(room.roomId));
		}
	});
	client.on(cryptoApi.CryptoEvent.VerificationRequestReceived, (request) => {
		log(`verification request from ${request.otherUserId}/${request.otherDeviceId ?? "-"} (room ${request.roomId ?? "-"})`);
		if (state.emitEvents) emit("verification_request", { user_id: request.otherUserId, device_id: request.otherDeviceId ?? null, room_id: request.roomId ?? null });
		if (!state.acceptVerifications) return;
		runVerification(request, 120000).catch((e) => log("incoming verification failed:", e.message));
	});
	client.on(RoomStateEvent.Events, (ev) => {
		if (ev.getType() === "m.room.encryption" && ev.getRoomId()) checkWaiters(ev.getRoomId());
	});

	const prepared = new Promise((resolve, reject) => {
		const onSync = (st, _prev, data) => {
			state.syncState = st;
			if (st === SyncState.Prepared || st === SyncState.Syncing) {
				client.off(ClientEvent.Sync, onSync);
				resolve();
			} else if (st === SyncState.Error && data?.error) {
				log("sync error:", data.error.message);
			}
		};
		client.on(ClientEvent.Sync, onSync);
	});
	client.on(ClientEvent.Sync, (st) => {
		state.syncState = st;
	});
	await client.startClient({ initialSyncLimit: 50, lazyLoadMembers: false, threadSupport: false });
	await withTimeout(prepared, args.timeout_ms ?? 60000, "the first sync");
	// Wait until our device keys are on the server, so that other clients can encrypt for us.
	await waitFor("the device keys to be uploaded", 30000, async () => {
		const resp = await client.downloadKeysForUsers([state.userId]);
		return resp.device_keys?.[state.userId]?.[state.deviceId];
	}, 100);
	const tReady = Date.now();
	log(`logged in as ${state.userId} / ${state.deviceId}: login ${tLogin - t0} ms, crypto ${tCrypto - tLogin} ms, sync+keys ${tReady - tCrypto} ms`);
	return {
		user_id: state.userId,
		device_id: state.deviceId,
		access_token: res.access_token,
		timings_ms: { login: tLogin - t0, crypto_init: tCrypto - tLogin, sync_and_keys: tReady - tCrypto },
	};
}

async function joinWithRetry(roomId) {
	for (let i = 0; i < 5; i++) {
		try {
			await client.joinRoom(roomId);
			log(`auto-joined ${roomId}`);
			if (state.emitEvents) emit("joined", { room_id: roomId });
			return;
		} catch (e) {
			log(`auto-join ${roomId} failed (try ${i + 1}):`, e.message);
			await sleep(200 * (i + 1));
		}
	}
}

function uiaPassword(password) {
	return async (makeRequest) => {
		// Dendrite (like Synapse) wants the session from a first, auth-less round.
		try {
			return await makeRequest(null);
		} catch (e) {
			if (!(e instanceof MatrixError) || e.httpStatus !== 401 || !e.data?.flows) throw e;
			log(`UIA for the cross-signing keys upload: flows ${JSON.stringify(e.data.flows)}, answering with the password`);
			return await makeRequest({
				type: "m.login.password",
				identifier: { type: "m.id.user", user: state.userId },
				password,
				session: e.data.session,
			});
		}
	};
}

async function crossSigningStatusJSON() {
	const crypto = client.getCrypto();
	const st = await crypto.getCrossSigningStatus();
	return {
		ready: await crypto.isCrossSigningReady(),
		public_keys_on_device: st.publicKeysOnDevice,
		private_keys_in_secret_storage: st.privateKeysInSecretStorage,
		private_keys_cached_locally: st.privateKeysCachedLocally,
		master_key: await crypto.getCrossSigningKeyId(cryptoApi.CrossSigningKey.Master),
	};
}

async function bootstrapCrossSigning(args) {
	const c = requireClient();
	const crypto = c.getCrypto();
	const opts = {
		setupNewCrossSigning: args.setup_new ?? !args.from_secret_storage,
		authUploadDeviceSigningKeys: args.password ? uiaPassword(args.password) : undefined,
	};
	if (opts.setupNewCrossSigning) {
		await crypto.bootstrapCrossSigning(opts);
	} else {
		// Importing existing keys needs our public identity, which the Rust crypto learns from
		// a /keys/query that may still be running right after login: retry for a while.
		await crypto.getUserDeviceInfo([state.userId], true);
		const deadline = Date.now() + (args.timeout_ms ?? 20000);
		for (;;) {
			try {
				await crypto.bootstrapCrossSigning(opts);
				break;
			} catch (e) {
				if (Date.now() > deadline || !/import/i.test(e.message)) throw e;
				log("bootstrap_cross_signing: retrying:", e.message);
				await sleep(250);
			}
		}
	}
	// Our device is now signed by the new self-signing key; make sure the server says so.
	await waitFor("our device to be cross-signed on the server", 30000, async () => {
		const st = await crypto.getDeviceVerificationStatus(state.userId, state.deviceId);
		return st?.signedByOwner;
	}, 100);
	return await crossSigningStatusJSON();
}

async function bootstrapSecretStorage(args) {
	const c = requireClient();
	const crypto = c.getCrypto();
	let recoveryKey = null;
	await crypto.bootstrapSecretStorage({
		createSecretStorageKey: async () => {
			const k = await crypto.createRecoveryKeyFromPassphrase();
			recoveryKey = k.encodedPrivateKey;
			state.secretStorageKey = k.privateKey;
			return k;
		},
		setupNewSecretStorage: args.setup_new ?? true,
		setupNewKeyBackup: !!args.key_backup,
	});
	return { recovery_key: recoveryKey, cross_signing: await crossSigningStatusJSON() };
}

// ensureTracked makes the Rust crypto track userId's devices (it tracks only the members of
// rooms we share) and waits for the resulting /keys/query: device_status and verification
// requests read the OlmMachine's store, which knows nothing of untracked users.
async function ensureTracked(userId) {
	const crypto = client.getCrypto();
	const machine = crypto.getOlmMachineOrThrow();
	const tracked = await machine.trackedUsers();
	let known = false;
	tracked.forEach((u) => {
		if (u.toString() === userId) known = true;
	});
	if (known) return;
	const wasm = await import("@matrix-org/matrix-sdk-crypto-wasm");
	await machine.updateTrackedUsers([new wasm.UserId(userId)]);
	await crypto.outgoingRequestsManager.doProcessOutgoingRequests();
}

// queryKeys sends a /keys/query for userId now and feeds the answer to the Rust crypto,
// instead of waiting for the server to flag the user's device list as changed.
async function queryKeys(userId) {
	const crypto = client.getCrypto();
	const wasm = await import("@matrix-org/matrix-sdk-crypto-wasm");
	const req = crypto.getOlmMachineOrThrow().queryKeysForUsers([new wasm.UserId(userId)]);
	await crypto.outgoingRequestProcessor.makeOutgoingRequest(req);
}

function deviceStatusJSON(st) {
	if (!st) return null;
	return {
		signed_by_owner: st.signedByOwner,
		cross_signing_verified: st.crossSigningVerified,
		locally_verified: st.localVerified,
		is_verified: st.isVerified(),
	};
}

async function deviceStatus(args) {
	need(args, "user_id", "device_id");
	const crypto = requireClient().getCrypto();
	const timeoutMs = args.timeout_ms ?? 0;
	// Refresh the device list first: the answer must reflect what the server has now.
	await ensureTracked(args.user_id);
	const fetchStatus = async () => {
		if (args.refresh !== false) await queryKeys(args.user_id);
		return await crypto.getDeviceVerificationStatus(args.user_id, args.device_id);
	};
	let st = await fetchStatus();
	// Optionally wait until a condition holds (e.g. signed_by_owner after the other side bootstraps).
	if (args.wait_signed_by_owner && timeoutMs > 0) {
		st = await waitFor(`${args.user_id}/${args.device_id} to be signed by its owner`, timeoutMs, async () => {
			const s = await fetchStatus();
			return s?.signedByOwner ? s : null;
		}, 200);
	}
	const us = await crypto.getUserVerificationStatus(args.user_id);
	return {
		known: st !== null,
		device: deviceStatusJSON(st),
		user: {
			is_cross_signing_verified: us.isCrossSigningVerified(),
			was_cross_signing_verified: us.wasCrossSigningVerified(),
			is_verified: us.isVerified(),
			needs_user_approval: us.needsUserApproval,
		},
	};
}

async function userIdentity(args) {
	need(args, "user_id");
	const c = requireClient();
	const resp = await c.downloadKeysForUsers([args.user_id]);
	const keyOf = (k) => (k ? Object.values(k.keys ?? {})[0] ?? null : null);
	const master = resp.master_keys?.[args.user_id];
	const self = resp.self_signing_keys?.[args.user_id];
	const devices = Object.keys(resp.device_keys?.[args.user_id] ?? {});
	const res = {
		has_identity: !!master,
		master_key: keyOf(master),
		self_signing_key: keyOf(self),
		devices,
	};
	if (args.user_id === state.userId) {
		res.user_signing_key = keyOf(resp.user_signing_keys?.[args.user_id]);
	}
	return res;
}

// ---------------------------------------------------------------- rooms and messages

async function waitRoom(roomId, { encrypted = false, timeoutMs = 30000 } = {}) {
	const c = requireClient();
	await waitFor(`room ${roomId} to appear in the sync`, timeoutMs, () => {
		const room = c.getRoom(roomId);
		if (!room || room.getMyMembership() !== "join") return false;
		return !encrypted || room.hasEncryptionStateEvent();
	});
	return c.getRoom(roomId);
}

async function createRoom(args) {
	const c = requireClient();
	const initialState = [];
	if (args.encrypted) {
		initialState.push({ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } });
	}
	const req = {
		preset: args.preset || (args.is_direct ? "trusted_private_chat" : "private_chat"),
		invite: args.invite ?? [],
		is_direct: !!args.is_direct,
		initial_state: initialState,
	};
	if (args.name) req.name = args.name;
	if (args.topic) req.topic = args.topic;
	const { room_id: roomId } = await c.createRoom(req);
	if (args.is_direct && (args.invite ?? []).length) {
		const dm = c.getAccountData("m.direct")?.getContent() ?? {};
		for (const u of args.invite) dm[u] = [...new Set([...(dm[u] ?? []), roomId])];
		await c.setAccountData("m.direct", dm);
	}
	// Do not answer before the room (and its encryption state) is in our store: sending into a
	// room the client does not yet know to be encrypted would go out in the clear.
	await waitRoom(roomId, { encrypted: !!args.encrypted });
	return { room_id: roomId };
}

async function join(args) {
	need(args, "room_id");
	const c = requireClient();
	const room = await c.joinRoom(args.room_id);
	await waitRoom(room.roomId);
	return { room_id: room.roomId };
}

async function waitJoined(args) {
	need(args, "room_id");
	const room = await waitRoom(args.room_id, { timeoutMs: args.timeout_ms ?? 30000 });
	return { room_id: room.roomId, encrypted: room.hasEncryptionStateEvent() };
}

async function waitMember(args) {
	need(args, "room_id", "user_id");
	const c = requireClient();
	const want = args.membership || "join";
	await waitFor(`${args.user_id} to be '${want}' in ${args.room_id}`, args.timeout_ms ?? 30000, () => {
		return c.getRoom(args.room_id)?.getMember(args.user_id)?.membership === want;
	});
	return {};
}

async function send(args) {
	need(args, "room_id");
	const c = requireClient();
	await waitRoom(args.room_id);
	let content;
	if (args.content) {
		content = args.content;
	} else {
		need(args, "body");
		content = { msgtype: args.msgtype || "m.text", body: args.body };
		if (args.html) {
			content.format = "org.matrix.custom.html";
			content.formatted_body = args.html;
		}
	}
	if (args.edit) {
		const newContent = { ...content };
		content = {
			...content,
			body: `* ${content.body}`,
			"m.new_content": newContent,
			"m.relates_to": { rel_type: "m.replace", event_id: args.edit },
		};
		if (newContent.formatted_body) content.formatted_body = `* ${newContent.formatted_body}`;
	} else if (args.thread) {
		content["m.relates_to"] = {
			rel_type: "m.thread",
			event_id: args.thread,
			is_falling_back: !args.reply_to,
			"m.in_reply_to": { event_id: args.reply_to || args.thread },
		};
	} else if (args.reply_to) {
		content["m.relates_to"] = { "m.in_reply_to": { event_id: args.reply_to } };
	}
	const res = await c.sendEvent(args.room_id, args.type || "m.room.message", content);
	return { event_id: res.event_id };
}

async function react(args) {
	need(args, "room_id", "event_id", "key");
	const c = requireClient();
	await waitRoom(args.room_id);
	const res = await c.sendEvent(args.room_id, "m.reaction", {
		"m.relates_to": { rel_type: "m.annotation", event_id: args.event_id, key: args.key },
	});
	return { event_id: res.event_id };
}

async function redact(args) {
	need(args, "room_id", "event_id");
	const c = requireClient();
	await waitRoom(args.room_id);
	const res = await c.redactEvent(args.room_id, args.event_id, undefined, args.reason ? { reason: args.reason } : undefined);
	return { event_id: res.event_id };
}

// blacklistUnverified sets whether room keys go only to devices we verified (Element's
// "Never send encrypted messages to unverified sessions"); the others get m.room_key.withheld.
async function blacklistUnverified(args) {
	if (typeof args.value !== "boolean") throw new CmdError("bad_args", "value must be a boolean");
	requireClient().getCrypto().globalBlacklistUnverifiedDevices = args.value;
	return {};
}

async function roomEncrypted(args) {
	need(args, "room_id");
	const c = requireClient();
	const room = c.getRoom(args.room_id);
	return {
		known: !!room,
		membership: room?.getMyMembership() ?? null,
		encrypted: await c.getCrypto().isEncryptionEnabledInRoom(args.room_id),
		has_encryption_state_event: room?.hasEncryptionStateEvent() ?? false,
	};
}

async function rooms() {
	const c = requireClient();
	return {
		rooms: c.getRooms().map((r) => ({
			room_id: r.roomId,
			name: r.name,
			membership: r.getMyMembership(),
			encrypted: r.hasEncryptionStateEvent(),
			dm_inviter: r.getDMInviter?.() ?? null,
		})),
	};
}

async function setDeviceVerified(args) {
	need(args, "user_id", "device_id");
	const crypto = requireClient().getCrypto();
	await ensureTracked(args.user_id);
	await crypto.setDeviceVerified(args.user_id, args.device_id, args.verified ?? true);
	return deviceStatusJSON(await crypto.getDeviceVerificationStatus(args.user_id, args.device_id));
}


// ---------------------------------------------------------------- verification (SAS)

// runVerification drives one SAS verification to its end from either side: accepts an
// incoming request, starts SAS once the request is ready (unless the other side did),
// confirms the emojis (tests compare them with the other side's afterwards) and waits for
// the verification to be done. It records the outcome in state.verifications.
async function runVerification(request, timeoutMs) {
	const { VerificationPhase, VerificationRequestEvent, VerifierEvent } = cryptoApi;
	const rec = {
		user_id: request.otherUserId,
		device_id: request.otherDeviceId ?? null,
		room_id: request.roomId ?? null,
		initiated_by_me: request.initiatedByMe,
		done: false,
	};
	const deadline = Date.now() + timeoutMs;
	const left = () => Math.max(0, deadline - Date.now());
	const phaseAtLeast = (phase) =>
		new Promise((resolve, reject) => {
			const check = () => {
				if (request.phase === VerificationPhase.Cancelled) {
					cleanup();
					reject(new CmdError("verification_cancelled", `verification cancelled: ${request.cancellationCode ?? ""} ${request.cancellingUserId ?? ""}`.trim()));
				} else if (request.phase >= phase) {
					cleanup();
					resolve();
				}
			};
			const timer = setTimeout(() => {
				cleanup();
				reject(new CmdError("timeout", `verification stuck in phase ${VerificationPhase[request.phase]}`));
			}, left());
			const cleanup = () => {
				clearTimeout(timer);
				request.off(VerificationRequestEvent.Change, check);
			};
			request.on(VerificationRequestEvent.Change, check);
			check();
		});
	try {
		if (!request.initiatedByMe && request.phase === VerificationPhase.Requested) await request.accept();
		await phaseAtLeast(VerificationPhase.Ready);
		let verifier = request.verifier;
		if (!verifier) {
			// Give the other side a moment to start SAS itself; then start it ourselves.
			const until = Date.now() + (request.initiatedByMe ? 0 : 1500);
			while (!request.verifier && Date.now() < until && request.phase === VerificationPhase.Ready) await sleep(50);
			verifier = request.verifier ?? (await request.startVerification("m.sas.v1"));
		}
		const sasShown = new Promise((resolve) => {
			const cb = verifier.getShowSasCallbacks();
			if (cb) resolve(cb);
			else verifier.once(VerifierEvent.ShowSas, resolve);
		});
		const verified = verifier.verify();
		verified.catch(() => {}); // awaited below; do not report it as unhandled meanwhile
		const sas = await withTimeout(Promise.race([sasShown, verified.then(() => null)]), left(), "the SAS to compare");
		if (sas) {
			rec.emoji = (sas.sas.emoji ?? []).map(([, name]) => name);
			rec.emoji_symbols = (sas.sas.emoji ?? []).map(([e]) => e);
			rec.decimal = sas.sas.decimal ?? null;
			if (state.emitEvents) emit("verification_sas", { ...rec });
			await sas.confirm();
		}
		await withTimeout(verified, left(), "the other side to confirm the SAS");
		rec.done = true;
		return rec;
	} catch (e) {
		rec.error = e.message;
		try {
			if (request.phase !== VerificationPhase.Cancelled && request.phase !== VerificationPhase.Done) await request.cancel();
		} catch {}
		throw e;
	} finally {
		state.verifications.push(rec);
		if (state.emitEvents) emit("verification", { ...rec });
	}
}

async function verificationResult(rec, userId, deviceId) {
	const crypto = client.getCrypto();
	const res = { ...rec };
	// Signing the other user's master key (when its key was part of the MAC) and uploading
	// the signature finish shortly after the verification itself.
	const until = Date.now() + 5000;
	for (;;) {
		const us = await crypto.getUserVerificationStatus(userId);
		res.user_cross_signing_verified = us.isCrossSigningVerified();
		if (res.user_cross_signing_verified || Date.now() > until) break;
		await sleep(100);
	}
	if (deviceId) res.device_status = deviceStatusJSON(await crypto.getDeviceVerificationStatus(userId, deviceId));
	return res;
}

async function verifyDevice(args) {
	need(args, "user_id", "device_id");
	const crypto = requireClient().getCrypto();
	await ensureTracked(args.user_id);
	const request = await crypto.requestDeviceVerification(args.user_id, args.device_id);
	const rec = await runVerification(request, args.timeout_ms ?? 60000);
	rec.device_id ??= args.device_id;
	return await verificationResult(rec, args.user_id, args.device_id);
}

async function verifyUser(args) {
	need(args, "user_id", "room_id");
	const crypto = requireClient().getCrypto();
	await ensureTracked(args.user_id);
	const request = await crypto.requestVerificationDM(args.user_id, args.room_id);
	const rec = await runVerification(request, args.timeout_ms ?? 60000);
	return await verificationResult(rec, args.user_id, rec.device_id);
}

// trustUser signs userId's master key with our user-signing key and uploads the signature:
// what a successful interactive verification ends with, without the SAS exchange. Needs our
// own cross-signing (bootstrap_cross_signing).
async function trustUser(args) {
	need(args, "user_id");
	const c = requireClient();
	const crypto = c.getCrypto();
	await ensureTracked(args.user_id);
	const wasm = await import("@matrix-org/matrix-sdk-crypto-wasm");
	const machine = crypto.getOlmMachineOrThrow();
	const identity = await machine.getIdentity(new wasm.UserId(args.user_id));
	if (!identity) throw new CmdError("no_identity", `${args.user_id} has no cross-signing identity`);
	try {
		const req = await identity.verify();
		await crypto.outgoingRequestProcessor.makeOutgoingRequest(req);
	} finally {
		identity.free();
	}
	await waitFor(`${args.user_id} to be cross-signing verified`, args.timeout_ms ?? 20000, async () => {
		await queryKeys(args.user_id);
		return (await crypto.getUserVerificationStatus(args.user_id)).isCrossSigningVerified();
	}, 100);
	const us = await crypto.getUserVerificationStatus(args.user_id);
	return { is_cross_signing_verified: us.isCrossSigningVerified(), is_verified: us.isVerified() };
}

async function whoami() {
	const c = requireClient();
	return { user_id: state.userId, device_id: state.deviceId, sync_state: state.syncState, ed25519: c.getDeviceEd25519Key?.() ?? null };
}

async function logout() {
	if (!client) return {};
	const c = client;
	try {
		await c.logout(true);
	} finally {
		c.stopClient();
		client = null;
	}
	return {};
}

async function stop(args) {
	if (client) {
		if (args.logout) {
			try {
				await logout();
			} catch (e) {
				log("logout on stop:", e.message);
			}
		} else {
			client.stopClient();
		}
	}
	setTimeout(() => process.exit(0), 50);
	return {};
}

// ---------------------------------------------------------------- attachments (encrypted media)

const b64 = (buf) => Buffer.from(buf).toString("base64").replace(/=+$/, "");
const unb64 = (s) => Buffer.from(s.replace(/-/g, "+").replace(/_/g, "/"), "base64");

// downloadAttachment fetches an mxc through the authenticated media API, and, given `file`
// (an EncryptedFile), checks its SHA-256 and decrypts it as Element does (AES-CTR, WebCrypto).
async function downloadAttachment(args) {
	const c = requireClient();
	const mxc = args.file?.url ?? args.url;
	if (!mxc?.startsWith("mxc://")) throw new Error("need file.url or url (mxc://)");
	const [server, mediaId] = mxc.slice("mxc://".length).split("/");
	const res = await fetch(`${c.baseUrl}/_matrix/client/v1/media/download/${server}/${mediaId}`, {
		headers: { Authorization: `Bearer ${c.getAccessToken()}` },
	});
	if (!res.ok) throw new Error(`download ${mxc}: HTTP ${res.status}`);
	let data = new Uint8Array(await res.arrayBuffer());
	if (args.file) {
		const f = args.file;
		const hash = b64(await crypto.subtle.digest("SHA-256", data));
		if (hash !== f.hashes?.sha256?.replace(/=+$/, "")) throw new Error(`hash mismatch: ${hash} != ${f.hashes?.sha256}`);
		const key = await crypto.subtle.importKey("jwk", f.key, { name: "AES-CTR" }, false, ["encrypt", "decrypt"]);
		data = new Uint8Array(await crypto.subtle.decrypt({ name: "AES-CTR", counter: unb64(f.iv), length: 64 }, key, data));
	}
	const sha256 = Buffer.from(await crypto.subtle.digest("SHA-256", data)).toString("hex");
	return { sha256, size: data.length, data: Buffer.from(data).toString("base64") };
}

// uploadAttachment encrypts data (base64) as Element does and uploads it; it returns the
// EncryptedFile for an event's `file`.
async function uploadAttachment(args) {
	need(args, "data");
	const c = requireClient();
	const plain = Buffer.from(args.data, "base64");
	const key = await crypto.subtle.generateKey({ name: "AES-CTR", length: 256 }, true, ["encrypt", "decrypt"]);
	const iv = new Uint8Array(16);
	crypto.getRandomValues(iv.subarray(0, 8));
	const cipher = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-CTR", counter: iv, length: 64 }, key, plain));
	const up = await c.uploadContent(cipher, { type: "application/octet-stream", includeFilename: false });
	const jwk = await crypto.subtle.exportKey("jwk", key);
	return {
		file: {
			url: up.content_uri,
			key: { kty: "oct", alg: "A256CTR", ext: true, key_ops: ["encrypt", "decrypt"], k: jwk.k },
			iv: b64(iv),
			hashes: { sha256: b64(await crypto.subtle.digest("SHA-256", cipher)) },
			v: "v2",
		},
	};
}

const commands = {
	login,
	bootstrap_cross_signing: bootstrapCrossSigning,
	bootstrap_secret_storage: bootstrapSecretStorage,
	cross_signing_status: async () => (requireClient(), crossSigningStatusJSON()),
	create_room: createRoom,
	join,
	wait_joined: waitJoined,
	wait_member: waitMember,
	send,
	react,
	redact,
	wait_event: waitEvent,
	device_status: deviceStatus,
	user_identity: userIdentity,
	set_device_verified: setDeviceVerified,
	verify_device: verifyDevice,
	verify_user: verifyUser,
	trust_user: trustUser,
	verifications: async () => ({ verifications: state.verifications }),
	room_encrypted: roomEncrypted,
	blacklist_unverified: blacklistUnverified,
	rooms,
	whoami,
	logout,
	stop,
	ping: async () => ({ node: process.version }),
	download_attachment: downloadAttachment,
	upload_attachment: uploadAttachment,
};

// ---------------------------------------------------------------- main loop

async function handle(line) {
	let req;
	try {
		req = JSON.parse(line);
	} catch (e) {
		reply({ id: null, ok: false, code: "invalid_request", error: `bad JSON: ${e.message}` });
		return;
	}
	const { id, cmd, args = {} } = req;
	const fn = commands[cmd];
	if (!fn) {
		reply({ id, ok: false, code: "unknown_command", error: `unknown command '${cmd}'` });
		return;
	}
	const t0 = Date.now();
	try {
		const result = await fn(args ?? {});
		reply({ id, ok: true, result: result ?? {}, ms: Date.now() - t0 });
	} catch (e) {
		const r = { id, ok: false, code: e.code || (e instanceof MatrixError ? "matrix_error" : "error"), error: e.message || String(e), ms: Date.now() - t0 };
		if (e instanceof MatrixError) r.data = { errcode: e.errcode, http_status: e.httpStatus, body: e.data };
		else if (e.data) r.data = e.data;
		if (!(e instanceof CmdError)) log(`${cmd} failed:`, e);
		reply(r);
	}
}

process.on("unhandledRejection", (e) => log("unhandled rejection:", e));

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", (line) => {
	if (line.trim()) handle(line);
});
rl.on("close", () => {
	// The driver went away: stop syncing and leave.
	if (client) client.stopClient();
	process.exit(0);
});
emit("ready", { node: process.version });
