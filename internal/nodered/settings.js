// Node-RED settings for integration/nodered_test.go: headless (no editor, no admin API), on
// loopback, with the flow file, user directory and port from the environment. Nothing here
// reaches outside the machine.
module.exports = {
    uiHost: "127.0.0.1",
    uiPort: parseInt(process.env.NODE_RED_PORT, 10),
    userDir: process.env.NODE_RED_USER_DIR,
    flowFile: process.env.NODE_RED_FLOW_FILE,
    credentialSecret: false,
    httpAdminRoot: false,
    httpNodeRoot: "/",
    diagnostics: { enabled: false },
    runtimeState: { enabled: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false }, modules: { allowInstall: false } },
    functionExternalModules: false,
    logging: { console: { level: "info", metrics: false, audit: false } },
};
