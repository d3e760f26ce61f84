/**
 * SCIM request sequences as Okta and Microsoft Entra ID send them when an application is assigned
 * people and groups, in their order, with their bodies and their quirks (Entra ID's capitalized
 * `op`s and string booleans, Okta's value-object PATCH without a path, member removal by a path
 * filter, the enterprise extension Bulwark ignores). `{{name}}` is replaced by a value captured
 * from an earlier answer; `{{email}}` and friends by the test.
 */
export interface RecordedStep {
  note: string;
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Relative to the organization's SCIM base URL. */
  path: string;
  body?: unknown;
  contentType?: string;
  status: number;
  /** Must be part of the answer (toMatchObject). */
  expect?: unknown;
  /** Top-level fields of the answer kept for later steps, by the name they are kept as. */
  capture?: Record<string, string>;
}

const USER = 'urn:ietf:params:scim:schemas:core:2.0:User';
const GROUP = 'urn:ietf:params:scim:schemas:core:2.0:Group';
const PATCH = 'urn:ietf:params:scim:api:messages:2.0:PatchOp';
const ENTERPRISE = 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User';
const LIST = 'urn:ietf:params:scim:api:messages:2.0:ListResponse';

/** Okta's SCIM 2.0 provisioning: import check, create, profile push, deactivate, group push. */
export const OKTA: RecordedStep[] = [
  {
    note: 'Okta reads what the app supports',
    method: 'GET',
    path: '/ServiceProviderConfig',
    status: 200,
    expect: { patch: { supported: true }, filter: { supported: true } },
  },
  {
    note: 'Okta looks the person up before creating them',
    method: 'GET',
    path: '/Users?filter=userName%20eq%20%22{{email}}%22&startIndex=1&count=100',
    status: 200,
    expect: { schemas: [LIST], totalResults: 0, Resources: [] },
  },
  {
    note: 'Okta creates the person',
    method: 'POST',
    path: '/Users',
    contentType: 'application/json',
    body: {
      schemas: [USER],
      userName: '{{email}}',
      name: { givenName: 'Grace', familyName: 'Hopper' },
      emails: [{ primary: true, value: '{{email}}', type: 'work' }],
      displayName: 'Grace Hopper',
      locale: 'en-US',
      externalId: '00u1okta',
      groups: [],
      active: true,
    },
    status: 201,
    expect: { userName: '{{email}}', active: true, externalId: '00u1okta', displayName: 'Grace Hopper' },
    capture: { userId: 'id' },
  },
  {
    note: 'Okta reads the person back',
    method: 'GET',
    path: '/Users/{{userId}}',
    status: 200,
    expect: { id: '{{userId}}', emails: [{ value: '{{email}}', primary: true }] },
  },
  {
    note: 'Okta finds the person by userName, in another case',
    method: 'GET',
    path: '/Users?filter=userName%20eq%20%22{{EMAIL}}%22&startIndex=1&count=100',
    status: 200,
    expect: { totalResults: 1, Resources: [{ id: '{{userId}}' }] },
  },
  {
    note: 'Okta pushes a profile change with PUT',
    method: 'PUT',
    path: '/Users/{{userId}}',
    contentType: 'application/json',
    body: {
      schemas: [USER],
      id: '{{userId}}',
      userName: '{{email}}',
      name: { givenName: 'Grace B.', familyName: 'Hopper' },
      emails: [{ primary: true, value: '{{email}}', type: 'work' }],
      displayName: 'Grace B. Hopper',
      active: true,
    },
    status: 200,
    expect: { displayName: 'Grace B. Hopper', active: true },
  },
  {
    note: 'Okta pushes a group',
    method: 'POST',
    path: '/Groups',
    contentType: 'application/json',
    body: { schemas: [GROUP], displayName: 'okta-sre', members: [] },
    status: 201,
    expect: { displayName: 'okta-sre', members: [] },
    capture: { groupId: 'id' },
  },
  {
    note: 'Okta adds the person to the group',
    method: 'PATCH',
    path: '/Groups/{{groupId}}',
    contentType: 'application/json',
    body: {
      schemas: [PATCH],
      Operations: [{ op: 'add', path: 'members', value: [{ value: '{{userId}}', display: '{{email}}' }] }],
    },
    status: 200,
    expect: { members: [{ value: '{{userId}}' }] },
  },
  {
    note: 'Okta renames the group with a value object',
    method: 'PATCH',
    path: '/Groups/{{groupId}}',
    contentType: 'application/json',
    body: {
      schemas: [PATCH],
      Operations: [{ op: 'replace', value: { id: '{{groupId}}', displayName: 'okta-sre-oncall' } }],
    },
    status: 200,
    expect: { displayName: 'okta-sre-oncall' },
  },
  {
    note: 'Okta removes the person from the group by a path filter',
    method: 'PATCH',
    path: '/Groups/{{groupId}}',
    contentType: 'application/json',
    body: { schemas: [PATCH], Operations: [{ op: 'remove', path: 'members[value eq "{{userId}}"]' }] },
    status: 200,
    expect: { members: [] },
  },
  {
    note: 'Okta deactivates the person',
    method: 'PATCH',
    path: '/Users/{{userId}}',
    contentType: 'application/json',
    body: { schemas: [PATCH], Operations: [{ op: 'replace', value: { active: false } }] },
    status: 200,
    expect: { active: false },
  },
  {
    note: 'Okta reactivates the person',
    method: 'PATCH',
    path: '/Users/{{userId}}',
    contentType: 'application/json',
    body: { schemas: [PATCH], Operations: [{ op: 'replace', value: { active: true } }] },
    status: 200,
    expect: { active: true },
  },
  {
    note: 'Okta deletes the group',
    method: 'DELETE',
    path: '/Groups/{{groupId}}',
    status: 204,
  },
];

/** Microsoft Entra ID's provisioning service: the same life, in its own dialect. */
export const ENTRA: RecordedStep[] = [
  {
    note: 'Entra ID looks the person up by userName',
    method: 'GET',
    path: '/Users?filter=userName+eq+%22{{email}}%22',
    status: 200,
    expect: { totalResults: 0 },
  },
  {
    note: 'Entra ID creates the person, with its enterprise extension',
    method: 'POST',
    path: '/Users',
    contentType: 'application/scim+json',
    body: {
      schemas: [USER, ENTERPRISE],
      externalId: 'e7c1-entra',
      userName: '{{email}}',
      active: true,
      emails: [{ primary: true, type: 'work', value: '{{email}}' }],
      meta: { resourceType: 'User' },
      name: { formatted: 'Alan Turing', familyName: 'Turing', givenName: 'Alan' },
      roles: [],
      [ENTERPRISE]: { employeeNumber: '42', department: 'Platform', manager: { value: 'boss' } },
    },
    status: 201,
    expect: { userName: '{{email}}', externalId: 'e7c1-entra', displayName: 'Alan Turing', active: true },
    capture: { userId: 'id' },
  },
  {
    note: 'Entra ID changes attributes with capitalized ops and a value path',
    method: 'PATCH',
    path: '/Users/{{userId}}',
    contentType: 'application/scim+json',
    body: {
      schemas: [PATCH],
      Operations: [
        { op: 'Replace', path: 'displayName', value: 'Alan M. Turing' },
        { op: 'Add', path: `${ENTERPRISE}:department`, value: 'SRE' },
      ],
    },
    status: 200,
    expect: { displayName: 'Alan M. Turing' },
  },
  {
    note: 'Entra ID looks the group up, without its members',
    method: 'GET',
    path: '/Groups?excludedAttributes=members&filter=displayName+eq+%22entra-ops%22',
    status: 200,
    expect: { totalResults: 0 },
  },
  {
    note: 'Entra ID creates the group',
    method: 'POST',
    path: '/Groups',
    contentType: 'application/scim+json',
    body: { schemas: [GROUP], externalId: 'g-entra-1', displayName: 'entra-ops', members: [] },
    status: 201,
    expect: { displayName: 'entra-ops', externalId: 'g-entra-1' },
    capture: { groupId: 'id' },
  },
  {
    note: 'Entra ID adds a member',
    method: 'PATCH',
    path: '/Groups/{{groupId}}',
    contentType: 'application/scim+json',
    body: {
      schemas: [PATCH],
      Operations: [{ op: 'Add', path: 'members', value: [{ value: '{{userId}}' }] }],
    },
    status: 200,
    expect: { members: [{ value: '{{userId}}' }] },
  },
  {
    note: 'Entra ID finds the group without its members',
    method: 'GET',
    path: '/Groups?excludedAttributes=members&filter=displayName+eq+%22entra-ops%22',
    status: 200,
    expect: { totalResults: 1, Resources: [{ id: '{{groupId}}', displayName: 'entra-ops' }] },
  },
  {
    note: 'Entra ID removes a member by value',
    method: 'PATCH',
    path: '/Groups/{{groupId}}',
    contentType: 'application/scim+json',
    body: {
      schemas: [PATCH],
      Operations: [{ op: 'Remove', path: 'members', value: [{ value: '{{userId}}' }] }],
    },
    status: 200,
    expect: { members: [] },
  },
  {
    note: 'Entra ID soft-deletes the person with a string boolean',
    method: 'PATCH',
    path: '/Users/{{userId}}',
    contentType: 'application/scim+json',
    body: { schemas: [PATCH], Operations: [{ op: 'Replace', path: 'active', value: 'False' }] },
    status: 200,
    expect: { active: false },
  },
  {
    note: 'Entra ID deletes the person',
    method: 'DELETE',
    path: '/Users/{{userId}}',
    status: 204,
  },
  {
    note: 'and the person is gone',
    method: 'GET',
    path: '/Users/{{userId}}',
    status: 404,
    expect: { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '404' },
  },
];
