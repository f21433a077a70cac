/**
 * Writes `proto/vendor/`: the third-party proto files our contracts compile against,
 * taken from installed packages so that `buf` works offline (the Buf Schema
 * Registry is not reachable from every build machine).
 *
 * - `grpc/health/v1` and `grpc/reflection/{v1,v1alpha}` are copied from the
 *   `grpc-health-check` and `@grpc/reflection` packages.
 * - `buf/validate/validate.proto` is rendered from the descriptor embedded in the
 *   `@bufbuild/protovalidate` package.
 *
 * Only the structure is rendered: packages, messages, enums, fields, oneofs and
 * extensions with their numbers and types. Options (the CEL of the predefined
 * rules) are left out: the rules are evaluated at run time from the package's own
 * complete descriptor, which generated code imports instead of this file.
 *
 * Usage: `npm run proto:vendor`
 */
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { isFieldSet } from "@bufbuild/protobuf";
import {
  type DescriptorProto,
  type EnumDescriptorProto,
  type FieldDescriptorProto,
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FieldDescriptorProtoSchema,
  type FileDescriptorProto,
} from "@bufbuild/protobuf/wkt";
import { file_buf_validate_validate } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

const scalarNames: Partial<Record<FieldDescriptorProto_Type, string>> = {
  [FieldDescriptorProto_Type.DOUBLE]: "double",
  [FieldDescriptorProto_Type.FLOAT]: "float",
  [FieldDescriptorProto_Type.INT64]: "int64",
  [FieldDescriptorProto_Type.UINT64]: "uint64",
  [FieldDescriptorProto_Type.INT32]: "int32",
  [FieldDescriptorProto_Type.FIXED64]: "fixed64",
  [FieldDescriptorProto_Type.FIXED32]: "fixed32",
  [FieldDescriptorProto_Type.BOOL]: "bool",
  [FieldDescriptorProto_Type.STRING]: "string",
  [FieldDescriptorProto_Type.BYTES]: "bytes",
  [FieldDescriptorProto_Type.UINT32]: "uint32",
  [FieldDescriptorProto_Type.SFIXED32]: "sfixed32",
  [FieldDescriptorProto_Type.SFIXED64]: "sfixed64",
  [FieldDescriptorProto_Type.SINT32]: "sint32",
  [FieldDescriptorProto_Type.SINT64]: "sint64",
};

function typeName(field: FieldDescriptorProto): string {
  if (field.type === FieldDescriptorProto_Type.MESSAGE || field.type === FieldDescriptorProto_Type.ENUM) {
    return field.typeName;
  }
  const name = scalarNames[field.type];
  if (name === undefined) throw new Error(`unsupported field type ${field.type} on ${field.name}`);
  return name;
}

/** The oneof a field belongs to, or undefined (proto2 `optional` fields read as 0 when unset). */
function oneofOf(field: FieldDescriptorProto): number | undefined {
  if (field.proto3Optional || !isFieldSet(field, FieldDescriptorProtoSchema.field.oneofIndex)) return undefined;
  return field.oneofIndex;
}

function renderField(field: FieldDescriptorProto, mapEntries: Map<string, DescriptorProto>, indent: string): string {
  const entry = mapEntries.get(field.typeName);
  if (entry && field.label === FieldDescriptorProto_Label.REPEATED) {
    const [key, value] = entry.field;
    if (!key || !value) throw new Error(`malformed map entry ${field.typeName}`);
    return `${indent}map<${typeName(key)}, ${typeName(value)}> ${field.name} = ${field.number};\n`;
  }
  let label = "";
  if (field.label === FieldDescriptorProto_Label.REPEATED) label = "repeated ";
  else if (field.label === FieldDescriptorProto_Label.OPTIONAL && oneofOf(field) === undefined) label = "optional ";
  return `${indent}${label}${typeName(field)} ${field.name} = ${field.number};\n`;
}

function renderEnum(en: EnumDescriptorProto, indent: string): string {
  let out = `${indent}enum ${en.name} {\n`;
  for (const value of en.value) out += `${indent}  ${value.name} = ${value.number};\n`;
  for (const range of en.reservedRange) out += `${indent}  reserved ${range.start} to ${range.end};\n`;
  return `${out}${indent}}\n`;
}

function renderMessage(msg: DescriptorProto, scope: string, indent: string): string {
  const fullName = `${scope}.${msg.name}`;
  const mapEntries = new Map<string, DescriptorProto>();
  for (const nested of msg.nestedType) {
    if (nested.options?.mapEntry) mapEntries.set(`${fullName}.${nested.name}`, nested);
  }
  let out = `${indent}message ${msg.name} {\n`;
  const inner = `${indent}  `;
  for (const nested of msg.nestedType) {
    if (!nested.options?.mapEntry) out += renderMessage(nested, fullName, inner);
  }
  for (const en of msg.enumType) out += renderEnum(en, inner);
  const oneofFields = new Map<number, FieldDescriptorProto[]>();
  for (const field of msg.field) {
    const index = oneofOf(field);
    if (index !== undefined) {
      const list = oneofFields.get(index) ?? [];
      list.push(field);
      oneofFields.set(index, list);
    }
  }
  const renderedOneofs = new Set<number>();
  for (const field of msg.field) {
    const index = oneofOf(field);
    if (index !== undefined) {
      if (renderedOneofs.has(index)) continue;
      renderedOneofs.add(index);
      out += `${inner}oneof ${msg.oneofDecl[index]?.name} {\n`;
      for (const member of oneofFields.get(index) ?? []) out += renderField(member, mapEntries, `${inner}  `);
      out += `${inner}}\n`;
      continue;
    }
    out += renderField(field, mapEntries, inner);
  }
  for (const range of msg.extensionRange) {
    const end = range.end >= 536870912 ? "max" : String(range.end - 1);
    out += `${inner}extensions ${range.start} to ${end};\n`;
  }
  for (const range of msg.reservedRange) out += `${inner}reserved ${range.start} to ${range.end - 1};\n`;
  for (const name of msg.reservedName) out += `${inner}reserved "${name}";\n`;
  return `${out}${indent}}\n`;
}

function render(file: FileDescriptorProto): string {
  let out = "// Code generated by scripts/render-validate-proto.ts from @bufbuild/protovalidate. DO NOT EDIT.\n";
  out += "// Structure only (no options): enough to compile buf.validate annotations offline.\n";
  out += `syntax = "${file.syntax || "proto2"}";\n\npackage ${file.package};\n\n`;
  for (const dep of file.dependency) out += `import "${dep}";\n`;
  out += "\n";
  const scope = `.${file.package}`;
  for (const en of file.enumType) out += renderEnum(en, "");
  for (const msg of file.messageType) out += renderMessage(msg, scope, "");
  const byExtendee = new Map<string, FieldDescriptorProto[]>();
  for (const ext of file.extension) {
    const list = byExtendee.get(ext.extendee) ?? [];
    list.push(ext);
    byExtendee.set(ext.extendee, list);
  }
  for (const [extendee, fields] of byExtendee) {
    out += `extend ${extendee} {\n`;
    for (const field of fields) out += renderField(field, new Map(), "  ");
    out += "}\n";
  }
  return out;
}

const vendor = join(import.meta.dirname, "..", "proto", "vendor");
const require = createRequire(import.meta.url);

function place(relativePath: string, write: (target: string) => void): void {
  const target = join(vendor, relativePath);
  mkdirSync(dirname(target), { recursive: true });
  write(target);
  console.log(`wrote proto/vendor/${relativePath}`);
}

place("buf/validate/validate.proto", (target) => writeFileSync(target, render(file_buf_validate_validate.proto)));
const healthRoot = dirname(require.resolve("grpc-health-check/package.json"));
place("grpc/health/v1/health.proto", (target) =>
  copyFileSync(join(healthRoot, "proto/health/v1/health.proto"), target),
);
const reflectionRoot = dirname(require.resolve("@grpc/reflection/package.json"));
for (const version of ["v1", "v1alpha"]) {
  const file = `grpc/reflection/${version}/reflection.proto`;
  place(file, (target) => copyFileSync(join(reflectionRoot, "build/proto", file), target));
}
