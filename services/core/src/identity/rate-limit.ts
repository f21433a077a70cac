import { create, createFileRegistry, type DescMessage } from "@bufbuild/protobuf";
import {
  DescriptorProtoSchema,
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
  file_google_protobuf_duration,
} from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { StateStore } from "../state/store.js";

/** Limits on failed logins and bad credentials. */
export interface RateLimitOptions {
  /** Failures one subject (a client address) may have per window; the next attempt is refused. Default 20. */
  maxFailures: number;
  /** The window of `maxFailures`, in ms, starting with the first failure. Default 300000 (5 minutes). */
  windowMs: number;
  /** Logins one client address may start per window (each stores a login state). Default 60. */
  maxLoginStarts: number;
}

/** The defaults of {@link RateLimitOptions}. */
export const defaultRateLimitOptions: RateLimitOptions = { maxFailures: 20, windowMs: 300_000, maxLoginStarts: 60 };

/** The rate-limit subject of a client address. */
export const addressSubject = (address: string): string => `ip:${address}`;

const counterKey = (subject: string): string => `ratelimit:${subject}`;
const blockKey = (subject: string): string => `ratelimit-block:${subject}`;

/**
 * The descriptor of google.rpc.RetryInfo (google/rpc/error_details.proto), built here
 * because the generated code does not include the googleapis protos. Clients decode the
 * RESOURCE_EXHAUSTED detail with it.
 */
export const RetryInfoSchema: DescMessage = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: "google/rpc/error_details.proto",
    package: "google.rpc",
    dependency: ["google/protobuf/duration.proto"],
    syntax: "proto3",
    messageType: [
      create(DescriptorProtoSchema, {
        name: "RetryInfo",
        field: [
          {
            name: "retry_delay",
            jsonName: "retryDelay",
            number: 1,
            label: FieldDescriptorProto_Label.OPTIONAL,
            type: FieldDescriptorProto_Type.MESSAGE,
            typeName: ".google.protobuf.Duration",
          },
        ],
      }),
    ],
  }),
  (name) => (name === file_google_protobuf_duration.proto.name ? file_google_protobuf_duration : undefined),
).getMessage("google.rpc.RetryInfo") as DescMessage;

/** The ResourceExhausted error of a limited subject: retry-after header, RetryInfo detail, time in the message. */
export function rateLimitedError(resetAtMs: number, nowMs: number, what: string): ConnectError {
  const seconds = Math.max(1, Math.ceil((resetAtMs - nowMs) / 1000));
  return new ConnectError(
    `too many ${what} from this client: retry after ${seconds} s (at ${new Date(nowMs + seconds * 1000).toISOString()})`,
    Code.ResourceExhausted,
    { "retry-after": String(seconds) },
    [{ desc: RetryInfoSchema, value: { retryDelay: { seconds: BigInt(seconds) } } }],
  );
}

/**
 * Counts failures per subject in fixed windows (`store.hit`, shared by every core replica).
 * A subject that reached the limit is blocked until its window ends: the block is a key with
 * a TTL, so the check before each attempt is one read and never counts.
 */
export interface RateLimiter {
  readonly options: RateLimitOptions;
  /** Throws ResourceExhausted when any of the subjects is blocked. */
  check(subjects: readonly string[]): Promise<void>;
  /** Counts a failure for each subject; a subject reaching the limit is blocked for the rest of its window. */
  fail(subjects: readonly string[]): Promise<void>;
  /** Counts a login start of a client address; throws ResourceExhausted beyond `maxLoginStarts` per window. */
  countLoginStart(address: string): Promise<void>;
}

/** A {@link RateLimiter} over the state store. */
export function createRateLimiter(
  store: StateStore,
  options: Partial<RateLimitOptions> = {},
  now: () => number = Date.now,
): RateLimiter {
  const resolved: RateLimitOptions = { ...defaultRateLimitOptions, ...options };
  return {
    options: resolved,
    async check(subjects) {
      const blocks = await store.getMany(subjects.map(blockKey));
      const resetAtMs = Math.max(0, ...blocks.map((b) => (b ? Number(b.value) : 0)));
      const nowMs = now();
      if (resetAtMs > nowMs) throw rateLimitedError(resetAtMs, nowMs, "failed sign-ins or bad credentials");
    },
    async fail(subjects) {
      await Promise.all(
        subjects.map(async (subject) => {
          const hit = await store.hit(counterKey(subject), resolved.windowMs);
          const ttlMs = hit.resetAtMs - now();
          if (hit.count >= resolved.maxFailures && ttlMs > 0) {
            await store.commit({ puts: [{ key: blockKey(subject), value: String(hit.resetAtMs), ttlMs }] });
          }
        }),
      );
    },
    async countLoginStart(address) {
      const hit = await store.hit(counterKey(`login-start:${address}`), resolved.windowMs);
      if (hit.count > resolved.maxLoginStarts) throw rateLimitedError(hit.resetAtMs, now(), "sign-ins started");
    },
  };
}
