import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  type DescriptorProto,
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
} from "@bufbuild/protobuf/wkt";
import { Code, type ConnectRouter } from "@connectrpc/connect";
import {
  ServerReflection,
  type ServerReflectionRequest,
  ServerReflectionRequestSchema,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
} from "@devex/gen/grpc/reflection/v1/reflection_pb.js";
import {
  ServerReflection as ServerReflectionV1Alpha,
  ServerReflectionRequestSchema as V1AlphaRequestSchema,
  ServerReflectionResponseSchema as V1AlphaResponseSchema,
} from "@devex/gen/grpc/reflection/v1alpha/reflection_pb.js";

/**
 * The descriptors of every proto file in `proto/`, with their comments, as written
 * next to the generated code by `npm run generate` (`buf build`). Reflection serves
 * these, so `buf curl` and grpcurl users see the doc comments.
 */
export function loadDescriptorSet(): FileDescriptorProto[] {
  // A service's bundle carries the set beside itself (`npm run build` copies it there): a
  // runner in a sandbox sees its bundle's folder, not the repository's packages.
  const beside = fileURLToPath(new URL("./descriptors.binpb", import.meta.url));
  const path = existsSync(beside) ? beside : fileURLToPath(import.meta.resolve("@devex/gen/descriptors.binpb"));
  return fromBinary(FileDescriptorSetSchema, readFileSync(path)).file;
}

/** Answers reflection queries from a fixed set of files. */
export class ReflectionIndex {
  private readonly files = new Map<string, FileDescriptorProto>();
  private readonly encoded = new Map<string, Uint8Array>();
  private readonly fileBySymbol = new Map<string, string>();
  private readonly extensions = new Map<string, Map<number, string>>();

  /**
   * @param files the files to serve (transitive dependencies included)
   * @param services the fully qualified names of the services this server serves
   */
  constructor(
    files: readonly FileDescriptorProto[],
    private readonly services: readonly string[],
  ) {
    for (const file of files) {
      this.files.set(file.name, file);
      const prefix = file.package ? `${file.package}.` : "";
      for (const message of file.messageType) this.indexMessage(file.name, prefix, message);
      for (const en of file.enumType) this.fileBySymbol.set(prefix + en.name, file.name);
      for (const ext of file.extension) this.indexExtension(file.name, prefix, ext.name, ext.extendee, ext.number);
      for (const service of file.service) {
        this.fileBySymbol.set(prefix + service.name, file.name);
        for (const method of service.method)
          this.fileBySymbol.set(`${prefix}${service.name}.${method.name}`, file.name);
      }
    }
    const missing = services.filter((name) => !this.fileBySymbol.has(name));
    if (missing.length > 0) throw new Error(`reflection: no descriptor for service(s) ${missing.join(", ")}`);
  }

  private indexMessage(file: string, prefix: string, message: DescriptorProto): void {
    const name = prefix + message.name;
    this.fileBySymbol.set(name, file);
    for (const nested of message.nestedType) this.indexMessage(file, `${name}.`, nested);
    for (const en of message.enumType) this.fileBySymbol.set(`${name}.${en.name}`, file);
    for (const ext of message.extension) this.indexExtension(file, `${name}.`, ext.name, ext.extendee, ext.number);
  }

  private indexExtension(file: string, prefix: string, name: string, extendee: string, number: number): void {
    this.fileBySymbol.set(prefix + name, file);
    const base = extendee.replace(/^\./, "");
    const byNumber = this.extensions.get(base) ?? new Map<number, string>();
    byNumber.set(number, file);
    this.extensions.set(base, byNumber);
  }

  /** Answers one request; `sent` holds the files already sent on this stream, which are not sent again. */
  answer(req: ServerReflectionRequest, sent: Set<string>): ServerReflectionResponse {
    const res = create(ServerReflectionResponseSchema, { validHost: req.host, originalRequest: req });
    const notFound = (what: string) => {
      res.messageResponse = {
        case: "errorResponse",
        value: { $typeName: "grpc.reflection.v1.ErrorResponse", errorCode: Code.NotFound, errorMessage: what },
      };
      return res;
    };
    const filesResponse = (name: string | undefined) => {
      if (name === undefined || !this.files.has(name)) return undefined;
      res.messageResponse = {
        case: "fileDescriptorResponse",
        value: {
          $typeName: "grpc.reflection.v1.FileDescriptorResponse",
          fileDescriptorProto: this.withDependencies(name, sent),
        },
      };
      return res;
    };
    const request = req.messageRequest;
    switch (request.case) {
      case "listServices":
        res.messageResponse = {
          case: "listServicesResponse",
          value: {
            $typeName: "grpc.reflection.v1.ListServiceResponse",
            service: this.services.map((name) => ({ $typeName: "grpc.reflection.v1.ServiceResponse", name })),
          },
        };
        return res;
      case "fileByFilename":
        return filesResponse(request.value) ?? notFound(`file "${request.value}" not found`);
      case "fileContainingSymbol":
        return (
          filesResponse(this.fileBySymbol.get(request.value.replace(/^\./, ""))) ??
          notFound(`symbol "${request.value}" not found`)
        );
      case "fileContainingExtension": {
        const file = this.extensions.get(request.value.containingType)?.get(request.value.extensionNumber);
        return (
          filesResponse(file) ??
          notFound(`extension ${request.value.extensionNumber} of "${request.value.containingType}" not found`)
        );
      }
      case "allExtensionNumbersOfType": {
        const type = request.value;
        if (!this.fileBySymbol.has(type)) return notFound(`type "${type}" not found`);
        res.messageResponse = {
          case: "allExtensionNumbersResponse",
          value: {
            $typeName: "grpc.reflection.v1.ExtensionNumberResponse",
            baseTypeName: type,
            extensionNumber: [...(this.extensions.get(type)?.keys() ?? [])],
          },
        };
        return res;
      }
      default:
        res.messageResponse = {
          case: "errorResponse",
          value: {
            $typeName: "grpc.reflection.v1.ErrorResponse",
            errorCode: Code.InvalidArgument,
            errorMessage: "empty reflection request",
          },
        };
        return res;
    }
  }

  /** The file and every dependency not yet sent, dependencies first. */
  private withDependencies(name: string, sent: Set<string>): Uint8Array[] {
    const out: Uint8Array[] = [];
    const visit = (fileName: string, requested: boolean) => {
      if (sent.has(fileName) && !requested) return;
      const file = this.files.get(fileName);
      if (!file) return;
      sent.add(fileName);
      for (const dep of file.dependency) visit(dep, false);
      out.push(this.encode(file));
    };
    visit(name, true);
    return out;
  }

  private encode(file: FileDescriptorProto): Uint8Array {
    let bytes = this.encoded.get(file.name);
    if (!bytes) {
      bytes = toBinary(FileDescriptorProtoSchema, file);
      this.encoded.set(file.name, bytes);
    }
    return bytes;
  }
}

/**
 * Registers gRPC server reflection, v1 and v1alpha, answering from one index. The index
 * is looked up per stream because it can only be built once every route is registered.
 */
export function reflectionRoutes(index: () => ReflectionIndex): (router: ConnectRouter) => void {
  return (router) => {
    router.service(ServerReflection, {
      async *serverReflectionInfo(requests) {
        const sent = new Set<string>();
        for await (const req of requests) yield index().answer(req, sent);
      },
    });
    // v1alpha has the same messages on the wire as v1, so it is answered by converting bytes.
    router.service(ServerReflectionV1Alpha, {
      async *serverReflectionInfo(requests) {
        const sent = new Set<string>();
        for await (const req of requests) {
          const v1 = fromBinary(ServerReflectionRequestSchema, toBinary(V1AlphaRequestSchema, req));
          yield fromBinary(V1AlphaResponseSchema, toBinary(ServerReflectionResponseSchema, index().answer(v1, sent)));
        }
      },
    });
  };
}
