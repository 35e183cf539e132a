// A small mobile-style client, type-checked by tests/test_contract.py with `tsc --noEmit` against the
// generated spec/blocks-rt.d.ts. Each `@ts-expect-error` is a misuse the types must reject: if the
// contract's types were too loose, that line would compile and tsc would fail on the unused directive.
import { io, type Socket } from "socket.io-client";
import type {
  ClientToServerEvents,
  ConnectError,
  ErrorAck,
  FundingState,
  ServerToClientEvents,
} from "../../spec/blocks-rt";

type BlocksSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

const offsets: Record<string, string> = {};

export function connect(url: string, token: string): BlocksSocket {
  const socket: BlocksSocket = io(`${url}/mobile`, {
    transports: ["websocket"],
    // A function, so every reconnect sends the latest offsets and token.
    auth: (cb) => cb({ token, offsets }),
  });

  socket.on("connect_error", (err) => {
    const refusal = (err as Error & Partial<ConnectError>).data;
    if (refusal?.code === "token_expired") console.log("refresh the token, then reconnect");
  });
  socket.on("connected", ({ userId }) => console.log(`connected as ${userId}`));
  socket.on("stream:resumed", ({ offsets: fresh, resyncRequired }) => {
    Object.assign(offsets, fresh);
    resyncRequired.forEach((stream) => console.log(`refetch ${stream} over REST`));
  });
  socket.on("stream:resync_required", ({ stream, reason }) => {
    delete offsets[stream];
    console.log(`refetch ${stream}: ${reason}`);
  });
  socket.on("wallet:balance_updated", ({ balance, change, eventId, stream }) => {
    offsets[stream] = eventId;
    const usdc: number = balance.usdc;
    console.log(`${change.type} ${change.amount}: ${usdc} USDC`);
  });
  socket.on("property:funding_updated", ({ property, eventId, stream }) => {
    offsets[stream] = eventId;
    showFunding(property);
  });
  socket.on("auth:expired", async ({ graceSeconds }) => {
    const ack = await socket.timeout(graceSeconds * 1000).emitWithAck("auth:refresh", { token: "<new JWT>" });
    if (ack.success) console.log(`token valid until ${new Date(ack.expiresAt * 1000).toISOString()}`);
    else console.log(`refresh refused: ${ack.error.code}`);
  });
  socket.on("session:ended", ({ reason, message }) => console.log(`session ended (${reason}): ${message}`));

  // @ts-expect-error: the server never sends this event
  socket.on("wallet:updated", () => undefined);
  // @ts-expect-error: balances are numbers, not strings
  socket.on("wallet:balance_updated", ({ balance }: { balance: { usdc: string } }) => balance);
  return socket;
}

export async function watchProperty(socket: BlocksSocket, propertyId: string): Promise<void> {
  const ack = await socket.emitWithAck("subscribe:property", { propertyId });
  if ("error" in ack) {
    explain(ack);
  } else {
    if (ack.funding) console.log(`funding now: ${JSON.stringify(ack.funding)}`);
    if (ack.offset) offsets[ack.room] = ack.offset;
  }
  socket.emit("ping", {}, (pong) => {
    if ("pong" in pong) console.log(`pong at ${pong.timestamp}`);
  });
  // @ts-expect-error: the field is propertyId
  socket.emit("subscribe:property", { property_id: propertyId }, () => undefined);
  // @ts-expect-error: clients cannot emit server events
  socket.emit("wallet:balance_updated", {}, () => undefined);
}

function explain(ack: ErrorAck): void {
  switch (ack.error.code) {
    case "rate_limited":
      console.log(`retry in ${ack.error.retryAfterMs ?? 0} ms`);
      break;
    case "forbidden":
      console.log("not allowed");
      break;
    // @ts-expect-error: not an ack error code
    case "no_such_code":
      break;
    default:
      console.log(ack.error.message);
  }
}

function showFunding(property: FundingState): void {
  console.log(`${property.title}: ${property.fundingProgress}% funded`);
}
