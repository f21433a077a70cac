import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type SwiftServer, startSwiftServer } from "./support/swift-server.js";

/**
 * The object store the persistence tests run against: a real Swift with s3api, started by
 * the harness. These tests check the harness itself and the S3 features the workspace
 * store relies on (path-style buckets, listings, multipart uploads, an outage).
 */
let swift: SwiftServer;
let s3: S3Client;

beforeAll(async () => {
  swift = await startSwiftServer();
  s3 = new S3Client({
    endpoint: swift.endpoint,
    region: swift.region,
    forcePathStyle: true,
    credentials: { accessKeyId: swift.accessKeyId, secretAccessKey: swift.secretAccessKey },
    maxAttempts: 1,
  });
});
afterAll(async () => {
  s3?.destroy();
  await swift?.stop();
});

describe("the Swift s3api harness", () => {
  it("stores, lists and returns objects in a path-style bucket", async () => {
    await s3.send(new CreateBucketCommand({ Bucket: "harness" }));
    await s3.send(new PutObjectCommand({ Bucket: "harness", Key: "repl_a/one.txt", Body: "one" }));
    await s3.send(new PutObjectCommand({ Bucket: "harness", Key: "repl_ab/two.txt", Body: "two" }));
    const got = await s3.send(new GetObjectCommand({ Bucket: "harness", Key: "repl_a/one.txt" }));
    expect(await got.Body?.transformToString()).toBe("one");
    // A prefix ending in "/" never takes a neighbour whose name only starts the same.
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: "harness", Prefix: "repl_a/" }));
    expect(listed.Contents?.map((object) => object.Key)).toEqual(["repl_a/one.txt"]);
  });

  it("completes a multipart upload", async () => {
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: "harness", Key: "big.bin" }));
    const part1 = Buffer.alloc(5 * 1024 * 1024, 1);
    const part2 = Buffer.from("tail");
    const etags = [];
    for (const [index, body] of [part1, part2].entries()) {
      const { ETag } = await s3.send(
        new UploadPartCommand({ Bucket: "harness", Key: "big.bin", UploadId, PartNumber: index + 1, Body: body }),
      );
      etags.push({ ETag, PartNumber: index + 1 });
    }
    await s3.send(
      new CompleteMultipartUploadCommand({
        Bucket: "harness",
        Key: "big.bin",
        UploadId,
        MultipartUpload: { Parts: etags },
      }),
    );
    const got = await s3.send(new GetObjectCommand({ Bucket: "harness", Key: "big.bin" }));
    const bytes = Buffer.from((await got.Body?.transformToByteArray()) ?? []);
    expect(bytes.length).toBe(part1.length + part2.length);
    expect(bytes.subarray(-4).toString()).toBe("tail");
  });

  it("can be taken down and brought back, keeping its data", async () => {
    await swift.down();
    await expect(s3.send(new GetObjectCommand({ Bucket: "harness", Key: "repl_a/one.txt" }))).rejects.toThrow();
    await swift.up();
    const got = await s3.send(new GetObjectCommand({ Bucket: "harness", Key: "repl_a/one.txt" }));
    expect(await got.Body?.transformToString()).toBe("one");
  });
});
