"""The lab: what notebooks ask of the library (checked parameters, `notebook`; recorded numbers, `record`;
exercises with feedback, `exercises`) and the runner that executes them (`runner`, `watch`, `parameters`,
`offline_html`). The kernel half (`notebook`, `record`, `exercises`) never imports the driver half (`runner`,
`watch`)."""
