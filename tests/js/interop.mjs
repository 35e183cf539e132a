// The real socket.io-client against a blocks-rt gateway, driven by tests/test_interop_js.py.
// Usage: node interop.mjs URL TOKEN REFUSED_TOKEN. Prints one JSON line per step; fails on any timeout.
import { io } from "socket.io-client";

const [url, token, refusedToken] = process.argv.slice(2);
const say = (step, data) => console.log(JSON.stringify({ step, ...data }));
// A bound on every wait; unref'd so that a timer never keeps node alive once the script is done.
const within = (ms, what, promise) =>
  Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error(`timeout: ${what}`)), ms).unref())]);
const options = { transports: ["websocket"], reconnection: false };

// 1. Connect as the mobile app does (design 5.2); record the order of `connect` and `connected`.
const order = [];
const socket = io(`${url}/mobile`, { ...options, auth: { token } });
socket.on("connect", () => order.push("connect"));
const welcome = new Promise((resolve) => socket.on("connected", (payload) => { order.push("connected"); resolve(payload); }));
say("connected", { order, payload: await within(10000, "connected", welcome) });

// 2. Watch a property, then wait for the event the test publishes once it reads this step.
const ack = await within(10000, "subscribe ack",
  socket.timeout(5000).emitWithAck("subscribe:property", { propertyId: "prop_palm" }));
const event = new Promise((resolve) => socket.on("property:status_changed", resolve));
say("subscribed", { ack });
say("received", { payload: await within(10000, "property:status_changed", event) });
socket.disconnect();

// 3. A refused connection: connect_error carries the message and the reason code.
const seen = [];
const refused = io(`${url}/mobile`, { ...options, auth: { token: refusedToken } });
refused.onAny((name) => seen.push(name));
const error = await within(10000, "connect_error", new Promise((resolve) => refused.on("connect_error", resolve)));
say("refused", { message: error.message, data: error.data, active: refused.active, events: seen });
refused.close();
