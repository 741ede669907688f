// Keel's GraphiQL: queries and mutations of the admin schema over HTTP POST (subscriptions
// need a graphql-transport-ws client, which this page does not bundle). The staff token goes
// in the headers editor: {"Authorization": "Bearer <access token>"}; Keel stores nothing.
(function () {
  'use strict';
  var endpoint = '/v1/admin/graphql';
  var fetcher = GraphiQL.createFetcher({ url: endpoint });
  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(React.createElement(GraphiQL, {
    fetcher: fetcher,
    defaultEditorToolsVisibility: 'headers',
    defaultHeaders: '{"Authorization": "Bearer "}',
  }));
})();
