export const appErrorCodes = ['CONFIG_INVALID', 'DATA_DIR_MISSING', 'DATA_DIR_EXISTS', 'MIGRATION_FAILED'] as const;
export type AppErrorCode = (typeof appErrorCodes)[number];

export class AppError extends Error {
  override readonly name = 'AppError';
  constructor(
    readonly code: AppErrorCode,
    message: string,
  ) {
    super(message);
  }
}
