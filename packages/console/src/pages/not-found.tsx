import { NotFound } from '../components/dead-end';

/** The screen of an address the console does not know. */
export default function NotFoundPage() {
  return <NotFound />;
}
