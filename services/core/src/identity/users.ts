import { Code, ConnectError } from "@connectrpc/connect";
import { mirrorId, newId } from "../ids.js";
import type { IdentityRecord, ProviderKind, UserRecord, Versioned } from "../model.js";
import type { StateStore } from "../state/store.js";

/** The key of a user record. */
export const userKey = (userId: string): string => `user:${userId}`;
/** The key linking an identity (provider id and subject) to its user; its value is the user id. */
export const identityKey = (providerId: string, subject: string): string => `identity:${providerId}:${subject}`;
/** The index of every user; members are {@link userIndexMember}s, so it lists newest first. */
export const usersIndex = "users";

/** The index member of a user id: the id characters mirrored so the index sorts newest first. */
export function userIndexMember(userId: string): string {
  return mirrorId(userId.slice("usr_".length));
}

/** The user id of a member of {@link usersIndex}. */
export function userIdOfMember(member: string): string {
  return `usr_${mirrorId(member)}`;
}

/** What a login provider says about the person signing in. */
export interface IdentityProfile {
  providerId: string;
  providerKind: ProviderKind;
  /** The provider's stable id for the person: the only thing users are matched by. */
  subject: string;
  login: string;
  /** Profile name; empty when the provider has none. */
  name: string;
  email: string;
  avatarUrl: string;
}

/** Options for {@link UserRepository.signIn}. */
export interface SignInOptions {
  /** Makes the user an admin (the identity is on the configured admin list). Never removes admin. */
  admin: boolean;
  /** Links a new identity to this user (the caller's session) instead of signing in or creating a user. */
  linkToUserId?: string;
  nowMs: number;
}

/** The outcome of {@link UserRepository.signIn}. */
export interface SignInResult {
  user: Versioned<UserRecord>;
  /** True when this sign-in created the user. */
  created: boolean;
}

/** A page of users. */
export interface UserPage {
  users: Versioned<UserRecord>[];
  /** The last index member returned: pass it as `after` for the next page; undefined on the last page. */
  nextAfter?: string;
}

/** Typed access to users and the identities linked to them. */
export interface UserRepository {
  get(userId: string): Promise<Versioned<UserRecord> | undefined>;
  /** The user linked to an identity. */
  findByIdentity(providerId: string, subject: string): Promise<Versioned<UserRecord> | undefined>;
  /**
   * Signs an identity in: the user already linked to (provider id, subject) — never one with
   * the same login name or email — or a new user, created atomically with the identity link
   * (checked at version 0) so concurrent first logins of one identity create one user.
   * Records the login time and the identity's login name and email as last seen. With
   * `linkToUserId`, a new identity is added to that user; AlreadyExists when the identity
   * belongs to another user.
   */
  signIn(profile: IdentityProfile, options: SignInOptions): Promise<SignInResult>;
  /** Users, newest first, after the index member `after`. */
  list(options: { limit: number; after?: string }): Promise<UserPage>;
  /** How many users there are. */
  count(): Promise<number>;
}

const maxAttempts = 8;

/** A {@link UserRepository} over the state store. */
export function createUserRepository(store: StateStore): UserRepository {
  const get = async (userId: string): Promise<Versioned<UserRecord> | undefined> => {
    const stored = await store.get(userKey(userId));
    return stored && { record: JSON.parse(stored.value) as UserRecord, version: stored.version };
  };

  const identityOf = (profile: IdentityProfile, nowMs: number): IdentityRecord => ({
    providerId: profile.providerId,
    providerKind: profile.providerKind,
    subject: profile.subject,
    login: profile.login,
    email: profile.email,
    linkedAtMs: nowMs,
  });

  /** The user after a sign-in: the identity's login and email refreshed, display data filled in when empty. */
  const signedIn = (user: UserRecord, profile: IdentityProfile, options: SignInOptions): UserRecord => {
    const identities = user.identities.some((i) => i.providerId === profile.providerId && i.subject === profile.subject)
      ? user.identities.map((i) =>
          i.providerId === profile.providerId && i.subject === profile.subject
            ? { ...i, login: profile.login, email: profile.email }
            : i,
        )
      : [...user.identities, identityOf(profile, options.nowMs)];
    return {
      ...user,
      identities,
      displayName: user.displayName || profile.name || profile.login,
      email: user.email || profile.email,
      avatarUrl: user.avatarUrl || profile.avatarUrl,
      admin: user.admin || options.admin,
      lastLoginAtMs: options.nowMs,
    };
  };

  const signIn = async (profile: IdentityProfile, options: SignInOptions): Promise<SignInResult> => {
    const linkKey = identityKey(profile.providerId, profile.subject);
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      const link = await store.get(linkKey);
      const linked = link && (await get(link.value));
      if (link && linked) {
        if (options.linkToUserId !== undefined && options.linkToUserId !== linked.record.id) {
          throw new ConnectError(
            `this ${profile.providerId} account is already linked to another user`,
            Code.AlreadyExists,
          );
        }
        const record = signedIn(linked.record, profile, options);
        const result = await store.commit({
          checks: [
            { key: linkKey, version: link.version },
            { key: userKey(record.id), version: linked.version },
          ],
          puts: [{ key: userKey(record.id), value: JSON.stringify(record) }],
        });
        if (result.ok) return { user: { record, version: result.versions[userKey(record.id)] ?? 0 }, created: false };
        continue;
      }
      // No link, or a link to a user that no longer exists: link the identity anew.
      const linkVersion = link?.version ?? 0;
      if (options.linkToUserId !== undefined) {
        const target = await get(options.linkToUserId);
        if (!target) throw new ConnectError("the signed-in user no longer exists", Code.Unauthenticated);
        const record = signedIn(target.record, profile, options);
        const result = await store.commit({
          checks: [
            { key: linkKey, version: linkVersion },
            { key: userKey(record.id), version: target.version },
          ],
          puts: [
            { key: linkKey, value: record.id },
            { key: userKey(record.id), value: JSON.stringify(record) },
          ],
        });
        if (result.ok) return { user: { record, version: result.versions[userKey(record.id)] ?? 0 }, created: false };
        continue;
      }
      const id = newId("usr", options.nowMs);
      const record = signedIn(
        {
          id,
          displayName: "",
          email: "",
          avatarUrl: "",
          admin: false,
          identities: [],
          createdAtMs: options.nowMs,
        },
        profile,
        options,
      );
      const result = await store.commit({
        checks: [
          { key: linkKey, version: linkVersion },
          { key: userKey(id), version: 0 },
        ],
        puts: [
          { key: linkKey, value: id },
          { key: userKey(id), value: JSON.stringify(record) },
        ],
        indexAdds: [{ index: usersIndex, member: userIndexMember(id) }],
      });
      // On a conflict another login linked the identity first: the next attempt signs in as that user.
      if (result.ok) return { user: { record, version: result.versions[userKey(id)] ?? 0 }, created: true };
    }
    throw new ConnectError("the sign-in kept conflicting with concurrent updates; try again", Code.Aborted);
  };

  return {
    get,
    async findByIdentity(providerId, subject) {
      const link = await store.get(identityKey(providerId, subject));
      return link && get(link.value);
    },
    signIn,
    async list({ limit, after }) {
      const members = await store.range(usersIndex, { limit, ...(after === undefined ? {} : { after }) });
      const stored = await store.getMany(members.map((m) => userKey(userIdOfMember(m))));
      const users = stored.flatMap((s) =>
        s ? [{ record: JSON.parse(s.value) as UserRecord, version: s.version }] : [],
      );
      const last = members.at(-1);
      return { users, ...(members.length === limit && last !== undefined ? { nextAfter: last } : {}) };
    },
    count() {
      return store.count(usersIndex);
    },
  };
}
