export { runnerRoutes } from "./routes.js";
