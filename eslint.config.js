import config from '@liveupdate/eslint-config';

export default config;
